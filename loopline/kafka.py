"""Kafka client configuration and topic administration.

Producers are idempotent with ``acks=all``; consumers commit by hand, after their
output is durable. Group timings make a join take seconds, not tens of seconds. Every
client logs in as :mod:`loopline.kafka_auth` says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from loopline.errors import BrokerUnavailable
from loopline.kafka_auth import confluent_config
from loopline.settings import TOPICS, Settings

# librdkafka logs through Python logging instead of writing to stderr.
KAFKA_LOGGER = logging.getLogger("loopline.kafka")

# A 6 s session with 0.5 s heartbeats lets a group form in ~3 s instead of ~23 s.
CONSUMER_GROUP_TIMINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


#: Largest record a Loopline producer sends. Apache Kafka's default ``max.message.bytes``
#: is 1048588: the margin leaves room for a batch's framing (librdkafka fills a batch up
#: to this size), so a full batch of small records is never refused by the broker,
#: while a single record over it fails in the producer (MSG_SIZE_TOO_LARGE).
MAX_MESSAGE_BYTES = 1_000_000
#: ``max.message.bytes`` of every topic Loopline creates: Apache Kafka's default, stated
#: so that a broker whose default differs still takes what the producers send.
TOPIC_MAX_MESSAGE_BYTES = 1_048_588

_HOUR_MS, _DAY_MS = 3_600_000, 86_400_000


def _retention_days(settings: Settings, name: str) -> float | None:
    """The retention of a topic in days; None: kept forever."""
    days: dict[str, float | None] = {
        "events": settings.events_retention_days,
        "labels": settings.labels_retention_days,
        "examples": settings.examples_retention_days,
        "deadletter": settings.deadletter_retention_days,
        "predictions": settings.predictions_retention_days,
        "checkpoints": settings.checkpoints_retention_days,
        # The control log is the source of truth for pauses and anomalous windows.
        "control": None,
    }
    return days[name]


def segment_ms(retention_ms: int) -> int:
    """A segment length for a topic deleted by age.

    The broker deletes whole closed segments, so a record lives up to retention plus
    one segment: a seventh of the retention bounds that overshoot, within an hour and
    a day so that long retentions do not hold thousands of segment files open.

    >>> segment_ms(7 * 86_400_000) == 86_400_000
    True
    >>> segment_ms(60_000)
    3600000
    """
    return min(_DAY_MS, max(_HOUR_MS, retention_ms // 7))


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """The configuration Loopline gives one of its topics when it creates it.

    >>> topic_config(Settings(), "control")["retention.ms"]
    '-1'
    >>> topic_config(Settings(), "events")["retention.ms"]
    '604800000'
    """
    config = {"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES), "cleanup.policy": "delete"}
    days = _retention_days(settings, name)
    if days is None:
        return config | {
            "retention.ms": "-1",
            "retention.bytes": "-1",
            "segment.ms": str(7 * _DAY_MS),
        }
    retention = round(days * _DAY_MS)
    return config | {"retention.ms": str(retention), "segment.ms": str(segment_ms(retention))}


def changelog_topic_config() -> dict[str, str]:
    """The configuration of a state changelog (faust's ``extra_topic_configs``): compacted,
    so it keeps the latest value of every key and restores in time bounded by the state."""
    return {
        "cleanup.policy": "compact",
        "max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES),
        # Only closed segments are compacted: a short one keeps restores short.
        "segment.ms": str(6 * _HOUR_MS),
        # A key written after a partition's last commit record is put back on restore to
        # the value before it: that value must not be compacted away meanwhile.
        "min.compaction.lag.ms": str(_HOUR_MS),
    }


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
        "message.max.bytes": MAX_MESSAGE_BYTES,
        "logger": KAFKA_LOGGER,
        **confluent_config(settings),
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
        **confluent_config(settings),
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


def admin(settings: Settings, **overrides: Any) -> AdminClient:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "logger": KAFKA_LOGGER,
        **confluent_config(settings),
        **overrides,
    }
    return AdminClient(config)


def create_topics(
    settings: Settings,
    partitions: int | None = None,
    names: tuple[str, ...] = TOPICS,
    timeout: float = 15.0,
) -> dict[str, str]:
    """Create Loopline's topics with :func:`topic_config`; idempotent. Returns
    ``{topic: "created" | "exists"}``.

    A topic that exists is left as it is; where its configuration differs from what
    Loopline would give it, a warning names the key and both values (an operator may
    have chosen otherwise; a topic created without it may keep records for too short).
    """
    partitions = partitions or settings.partitions
    client = admin(settings)
    configs = {settings.topic(n): topic_config(settings, n) for n in names}
    wanted = [
        NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)
        for topic, config in configs.items()
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
    existing = {t: configs[t] for t, state in result.items() if state == "exists"}
    if existing:
        _warn_on_drift(client, existing, timeout)
    return result


def topic_configs(
    client: AdminClient, topics: list[str], timeout: float = 15.0
) -> dict[str, dict[str, str]]:
    """The configuration the broker describes for each topic (DescribeConfigs)."""
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
    futures = client.describe_configs(resources, request_timeout=timeout)
    described: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        entries = future.result(timeout=timeout)
        described[resource.name] = {k: str(e.value) for k, e in entries.items()}
    return described


def config_drift(wanted: Mapping[str, str], found: Mapping[str, str]) -> dict[str, str | None]:
    """The keys of ``wanted`` whose value the broker describes otherwise: ``{key: found}``.

    >>> config_drift({"retention.ms": "-1", "segment.ms": "1"}, {"retention.ms": "604800000", "segment.ms": "1"})
    {'retention.ms': '604800000'}
    """
    return {k: found.get(k) for k, v in wanted.items() if found.get(k) != v}


def _warn_on_drift(client: AdminClient, wanted: dict[str, dict[str, str]], timeout: float) -> None:
    try:
        described = topic_configs(client, list(wanted), timeout)
    except (KafkaException, TimeoutError) as exc:
        # A broker that does not describe configs (or an account not allowed to) still
        # has its topics: there is only nothing to compare.
        KAFKA_LOGGER.warning("cannot compare the configuration of existing topics: %s", exc)
        return
    for topic, config in wanted.items():
        for key, found in config_drift(config, described.get(topic, {})).items():
            KAFKA_LOGGER.warning(
                "topic %s exists with %s=%s; Loopline creates it with %s=%s "
                "(kafka-configs --alter --entity-type topics --entity-name %s --add-config %s=%s)",
                topic,
                key,
                found,
                key,
                config[key],
                topic,
                key,
                config[key],
            )


def wait_for_broker(settings: Settings, timeout: float = 10.0) -> None:
    """Block until the broker answers a metadata request, or raise BrokerUnavailable."""
    try:
        admin(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"no Kafka broker answered at {settings.kafka_bootstrap} within {timeout}s: {exc}"
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
