"""Kafka client configuration and topic administration.

Producers are idempotent with ``acks=all``; consumers commit by hand, after their
output is durable. Group timings make a join take seconds, not tens of seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
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


#: How often librdkafka hands a consumer its statistics (``stats_cb``): the scrape interval.
STATS_INTERVAL_MS = 15_000


def consumer_lag(stats: Mapping[str, Any]) -> int | None:
    """Records past a consumer's position, summed over its assigned partitions.

    ``stats`` is a librdkafka statistics object (what ``stats_cb`` receives, parsed).
    A partition's end is its last stable offset (consumers read committed), its
    position the offset after the last record handed to the application, else the
    committed offset, else the log start. librdkafka refreshes the end of paused
    partitions too. None while no assigned partition knows both.

    >>> part = {"desired": True, "ls_offset": 120, "hi_offset": 120, "app_offset": 100,
    ...         "committed_offset": 90, "lo_offset": 0}
    >>> consumer_lag({"topics": {"t": {"partitions": {"0": part, "-1": {}}}}})
    20
    >>> consumer_lag({"topics": {}}) is None
    True
    """
    total, known = 0, False
    for topic in stats.get("topics", {}).values():
        for partition, p in topic.get("partitions", {}).items():
            if partition == "-1" or not p.get("desired"):  # -1: librdkafka's unassigned queue
                continue
            end = p["ls_offset"] if p["ls_offset"] >= 0 else p["hi_offset"]
            offsets = (p["app_offset"], p["committed_offset"], p["lo_offset"])
            position = next((o for o in offsets if o >= 0), None)
            if end < 0 or position is None:
                continue
            total += max(0, end - position)
            known = True
    return total if known else None


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


def group_lag(
    settings: Settings, group: str, names: tuple[str, ...], timeout: float = 10.0
) -> dict[str, int]:
    """Records on each topic not yet committed by consumer group ``group``.

    A partition the group never committed counts whole: nothing of it is processed.
    """
    consumer = Consumer(consumer_config(settings, group_id=group))
    try:
        lag: dict[str, int] = {}
        for name in names:
            topic = settings.topic(name)
            ends = end_offsets(consumer, topic, timeout)
            asked = [TopicPartition(topic, p) for p in ends]
            committed = {tp.partition: tp.offset for tp in consumer.committed(asked, timeout)}
            total = 0
            for p, end in ends.items():
                low = max(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout)[0], 0)
                total += max(0, end - max(committed.get(p, -1), low))
            lag[name] = total
        return lag
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot read the offsets of {group} from {settings.kafka_bootstrap}: {exc}"
        ) from None
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def read_tail(
    settings: Settings, name: str, last: int | None = None, timeout: float = 15.0
) -> list[Record]:
    """The last ``last`` records of each partition of a topic (all with ``None``), in
    partition then offset order; read without a consumer group, up to the end as of now."""
    topic = settings.topic(name)
    consumer = Consumer(consumer_config(settings, group_id=f"{settings.topic_prefix}inspect"))
    deadline = time.monotonic() + timeout
    try:
        ends = end_offsets(consumer, topic, timeout)
        starts = {}
        for p, end in ends.items():
            low = max(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout)[0], 0)
            if end > low:
                starts[p] = low if last is None else max(low, end - last)
        consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
        records: list[Record] = []
        pending = {p for p in starts if starts[p] < ends[p]}
        while pending:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"could not read {topic} to its end within {timeout:g}s")
            for msg in consumer.consume(1000, 0.2):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() is not None or partition is None or offset is None:
                    continue
                if offset < ends.get(partition, 0):
                    records.append(
                        Record(
                            partition,
                            offset,
                            msg.timestamp()[1],
                            msg.key(),
                            msg.value(),
                            _headers(msg.headers()),
                        )
                    )
                if offset + 1 >= ends.get(partition, 0):
                    pending.discard(partition)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot read {topic} from {settings.kafka_bootstrap}: {exc}"
        ) from None
    finally:
        consumer.close()


def _headers(raw: Any) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, value in raw or ():
        out[name] = value.encode() if isinstance(value, str) else (value or b"")
    return out
