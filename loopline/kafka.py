"""Kafka client configuration and topic administration.

Producers are idempotent with ``acks=all``; consumers commit by hand, after their
output is durable. Group timings make a join take seconds, not tens of seconds.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from loopline.errors import BrokerUnavailable
from loopline.settings import TOPICS, Settings

# librdkafka logs through Python logging instead of writing to stderr.
KAFKA_LOGGER = logging.getLogger("loopline.kafka")

# A 6 s session with 0.5 s heartbeats lets a group form in ~3 s instead of ~23 s.
CONSUMER_GROUP_TIMINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    timeout_ms = int(settings.publish_timeout_seconds * 1000)
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "queue.buffering.max.messages": settings.publish_buffer_messages,
        "message.timeout.ms": timeout_ms,
        "socket.connection.setup.timeout.ms": min(timeout_ms, 10_000),
        "logger": KAFKA_LOGGER,
        **overrides,
    }
    return config


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        **CONSUMER_GROUP_TIMINGS,
        "logger": KAFKA_LOGGER,
        **overrides,
    }
    return config


def admin(bootstrap: str) -> AdminClient:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": KAFKA_LOGGER}
    return AdminClient(config)


def create_topics(
    settings: Settings,
    partitions: int | None = None,
    names: tuple[str, ...] = TOPICS,
    timeout: float = 15.0,
) -> dict[str, str]:
    """Create Loopline's topics; idempotent. Returns ``{topic: "created" | "exists"}``."""
    partitions = partitions or settings.partitions
    client = admin(settings.kafka_bootstrap)
    wanted = [
        NewTopic(settings.topic(n), num_partitions=partitions, replication_factor=1) for n in names
    ]
    try:
        futures = client.create_topics(wanted, operation_timeout=timeout, request_timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot create topics on {settings.kafka_bootstrap}: {exc}"
        ) from None
    result: dict[str, str] = {}
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout)
            result[topic] = "created"
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerUnavailable(
                    f"cannot create topic {topic} on {settings.kafka_bootstrap}: {error.str()}"
                ) from None
            result[topic] = "exists"
        except TimeoutError:
            raise BrokerUnavailable(
                f"broker {settings.kafka_bootstrap} did not answer within {timeout}s"
            ) from None
    return result


def wait_for_broker(bootstrap: str, timeout: float = 10.0) -> None:
    """Block until the broker answers a metadata request, or raise BrokerUnavailable."""
    try:
        admin(bootstrap).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"no Kafka broker answered at {bootstrap} within {timeout}s: {exc}"
        ) from None


def topic_sizes(
    settings: Settings, names: tuple[str, ...] = TOPICS, timeout: float = 10.0
) -> dict[str, int]:
    """Records currently held per topic (high minus low watermark, summed over partitions)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(consumer_config(settings, group_id=f"{settings.topic_prefix}inspect"))
    try:
        metadata = consumer.list_topics(timeout=timeout)
        sizes: dict[str, int] = {}
        for name in names:
            topic = settings.topic(name)
            if topic not in metadata.topics:
                continue
            total = 0
            for partition in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout
                )
                total += max(0, high - max(low, 0))
            sizes[name] = total
        return sizes
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot read topics from {settings.kafka_bootstrap}: {exc}"
        ) from None
    finally:
        consumer.close()
