"""Kafka client configuration and topic administration.

Producers are idempotent with ``acks=all``; consumers commit by hand, after their
output is durable. Group timings make a join take seconds, not tens of seconds.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from loopline.errors import BrokerUnavailable
from loopline.settings import TOPICS, Settings

# librdkafka logs through Python logging instead of writing to stderr.
KAFKA_LOGGER = logging.getLogger("loopline.kafka")

# A 6 s session with 0.5 s heartbeats lets a group form in ~3 s instead of ~23 s.
CONSUMER_GROUP_TIMINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


# The control log is the source of truth for pauses and anomalous windows: keep it all.
TOPIC_CONFIGS = {"control": {"retention.ms": "-1"}}


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


def end_offsets(consumer: Consumer, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """The next offset to be written, per partition of ``topic``.

    Not simply the high watermark: some Kafka-protocol brokers (the embedded Tansu)
    report it as the last *batch's* base offset + 1. Reading from there to the end of
    that batch gives the true end on any broker. The consumer's assignment is replaced.
    """
    partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    ends: dict[int, int] = {}
    probe = []
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout
        )
        ends[partition] = max(high, 0)
        if high > max(low, 0):
            probe.append(TopicPartition(topic, partition, high - 1))
    if probe:
        consumer.assign(probe)
        quiet = 0
        while quiet < 2:
            messages = consumer.consume(10_000, 0.3)
            quiet = 0 if messages else quiet + 1
            for msg in messages:
                offset = msg.offset()
                if msg.error() is None and offset is not None:
                    ends[msg.partition() or 0] = max(ends[msg.partition() or 0], offset + 1)
        consumer.unassign()
    return ends


def topic_sizes(
    settings: Settings, names: tuple[str, ...] = TOPICS, timeout: float = 10.0
) -> dict[str, int]:
    """Records currently held per topic, summed over partitions."""
    consumer = Consumer(consumer_config(settings, group_id=f"{settings.topic_prefix}inspect"))
    try:
        metadata = consumer.list_topics(timeout=timeout)
        sizes: dict[str, int] = {}
        for name in names:
            topic = settings.topic(name)
            if topic not in metadata.topics:
                continue
            ends = end_offsets(consumer, topic, timeout)
            starts = {
                p: max(
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[0], 0
                )
                for p in ends
            }
            sizes[name] = sum(max(0, ends[p] - starts[p]) for p in ends)
        return sizes
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot read topics from {settings.kafka_bootstrap}: {exc}"
        ) from None
    finally:
        consumer.close()
