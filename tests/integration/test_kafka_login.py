"""Every kind of Kafka client logs in with SASL/SCRAM against a broker that requires it.

The embedded broker (Tansu 0.6, memory storage) requires a SASL login with
``--authentication`` but cannot be given a first user then (creating one must itself be
authenticated) and does not answer SASL without it. So these tests show the half a
broker without users can show: each client configured by :mod:`loopline.kafka_auth`
runs the SCRAM-SHA-512 exchange and is turned away as an unknown user, where a
PLAINTEXT client is dropped unauthenticated; and the password shows in no log.
Logins that succeed, and ACLs, need Apache Kafka (``docker-compose.yml``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, KafkaError, Producer

from loopline.devstack import Managed, free_port, tansu_binary
from loopline.kafka import admin, consumer_config, producer_config
from loopline.kafka_auth import aiokafka_config
from loopline.settings import Settings
from streams.topology import build_app

PASSWORD = "scram-pa55word-never-logged"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Managed]:
    port = free_port()
    broker = Managed("kafka-sasl", "127.0.0.1", port, tmp_path_factory.mktemp("kafka-sasl"))
    url = f"tcp://127.0.0.1:{port}"
    broker.spawn(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--authentication",
        ]
    )
    yield broker
    broker.stop()


def _settings(broker: Managed, tmp_path: Path, login: bool = True) -> Settings:
    env = {"LOOPLINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker.port}"}
    if login:
        env |= {
            "LOOPLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "LOOPLINE_KAFKA_USERNAME": "trainer",
            "LOOPLINE_KAFKA_PASSWORD": PASSWORD,
        }
    return Settings.from_env(env, env="dev", state_dir=tmp_path / "state")


def _unauthenticated(broker: Managed) -> int:
    """How often the broker has logged dropping a request sent without a login."""
    return broker.log_file.read_text(errors="replace").count("NotAuthenticated")


def _first_error(client: Any, errors: list[KafkaError]) -> KafkaError:
    deadline = time.monotonic() + 20
    while not errors and time.monotonic() < deadline:
        client.poll(0.2)
    assert errors, "the client reported no error within 20 s"
    return errors[0]


@pytest.mark.parametrize("kind", ["producer", "consumer", "admin"])
def test_confluent_clients_run_the_scram_exchange(
    sasl_broker: Managed, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = _settings(sasl_broker, tmp_path)
    errors: list[KafkaError] = []
    before = _unauthenticated(sasl_broker)
    client: Any
    if kind == "producer":
        client = Producer(producer_config(settings, error_cb=errors.append))
    elif kind == "consumer":
        client = Consumer(consumer_config(settings, "login-test", error_cb=errors.append))
        client.subscribe(["any"])
    else:
        client = admin(settings, error_cb=errors.append)
    try:
        error = _first_error(client, errors)
    finally:
        if kind == "consumer":
            client.close()
    assert error.code() == KafkaError._AUTHENTICATION, error
    assert "SASL SCRAM authentication failed" in error.str(), error
    assert "unknown-user" in error.str(), error  # the broker read the user name
    assert _unauthenticated(sasl_broker) == before
    assert PASSWORD not in caplog.text


def test_a_plaintext_client_is_dropped_unauthenticated(
    sasl_broker: Managed, tmp_path: Path
) -> None:
    """The other side of the check above: without the login settings, no SASL at all."""
    settings = _settings(sasl_broker, tmp_path, login=False)
    errors: list[KafkaError] = []
    before = _unauthenticated(sasl_broker)
    producer = Producer(producer_config(settings, error_cb=errors.append))
    producer.produce("any", b"x")
    deadline = time.monotonic() + 20
    while _unauthenticated(sasl_broker) == before and time.monotonic() < deadline:
        producer.poll(0.2)
    assert _unauthenticated(sasl_broker) > before
    assert not any("SASL" in e.str() for e in errors)
    producer.purge()


def _scram_exchange_failure(start: Callable[[], Any]) -> BaseException:
    """The error ``start`` ended with, which must come out of aiokafka's SCRAM client:
    the broker answers an unknown user with an error where the client expects its
    signature."""

    async def run() -> BaseException:
        try:
            await asyncio.wait_for(start(), 20)
        except Exception as exc:
            return exc
        raise AssertionError("the client started against a broker that knows no user")

    failure = asyncio.run(run())
    assert _raised_in_scram(failure), "".join(traceback.format_exception(failure))
    return failure


def _raised_in_scram(failure: BaseException) -> bool:
    """Whether one frame of the failure's traceback ran in aiokafka's SCRAM client."""
    tb = failure.__traceback__
    while tb is not None:
        local_self = tb.tb_frame.f_locals.get("self")
        if type(local_self).__name__ == "ScramAuthenticator":
            return True
        tb = tb.tb_next
    return False


def test_aiokafka_clients_and_the_faust_app_run_the_scram_exchange(
    sasl_broker: Managed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = _settings(sasl_broker, tmp_path)
    config = aiokafka_config(settings) | {"bootstrap_servers": settings.kafka_bootstrap}
    before = _unauthenticated(sasl_broker)

    async def producer() -> None:
        client = AIOKafkaProducer(**config)
        try:
            await client.start()
        finally:
            await client.stop()

    async def consumer() -> None:
        client = AIOKafkaConsumer("any", **config)
        try:
            await client.start()
        finally:
            await client.stop()

    for start in (producer, consumer):
        _scram_exchange_failure(start)

    app = build_app(settings)

    async def faust_producer() -> None:
        try:
            await app.producer.start()
        finally:
            await app.producer.stop()

    _scram_exchange_failure(faust_producer)
    assert _unauthenticated(sasl_broker) == before
    assert PASSWORD not in caplog.text
