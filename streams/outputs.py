"""Producing a batch's outputs and state, and finding outputs again after a crash.

Outputs of source partition ``p`` go to partition ``p`` (modulo the output topic's
partitions) and carry their source partition in a header, so a restarted worker reads
back exactly what it may have emitted since its last commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from loopline.errors import BrokerUnavailable
from loopline.kafka import consumer_config, producer_config
from loopline.settings import Settings
from streams.partition import Deadletter

SOURCE_PARTITION = "loopline.source_partition"
# A deadletter keeps at most this much of the original bytes (the rest is counted).
DEADLETTER_MAX_VALUE = 256 * 1024


SILENCE_SECONDS = 3.0
_PAST_THE_END = (
    KafkaError._PARTITION_EOF,
    KafkaError.OFFSET_OUT_OF_RANGE,
    KafkaError._AUTO_OFFSET_RESET,
)


def deadletter_record(
    d: Deadletter, settings: Settings
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The deadletter's value (the original bytes, cut to a bound) and its headers."""
    headers = [
        ("reason", d.reason.value.encode()),
        ("detail", d.detail.encode(errors="replace")[:1000]),
        ("source_topic", settings.topic(d.topic).encode()),
        ("source_partition", str(d.partition).encode()),
        ("source_offset", str(d.offset).encode()),
        (SOURCE_PARTITION, str(d.partition).encode()),
    ]
    value = d.value
    if value is not None and len(value) > DEADLETTER_MAX_VALUE:
        headers.append(("truncated_from", str(len(value)).encode()))
        value = value[:DEADLETTER_MAX_VALUE]
    return value, headers


def log_start(settings: Settings, topic: str, partition: int, timeout: float = 30.0) -> int:
    """The first offset ``topic``/``partition`` holds now."""
    consumer = Consumer(
        consumer_config(settings, group_id=f"{settings.topic_prefix}streams-readback")
    )
    try:
        tp = TopicPartition(topic, partition)
        low, _ = consumer.get_watermark_offsets(tp, timeout=timeout)
        return int(low)
    except KafkaException as exc:
        raise BrokerUnavailable(f"no offsets for {topic}/{partition}: {exc}") from exc
    finally:
        consumer.close()


def _high(consumer: Consumer, tp: TopicPartition) -> int:
    try:
        _, high = consumer.get_watermark_offsets(tp, timeout=5)
    except KafkaException as exc:
        raise BrokerUnavailable(f"{tp.topic}/{tp.partition} did not answer: {exc}") from exc
    return int(high)


def record_at(
    settings: Settings, topic: str, partition: int, offset: int, timeout: float = 5.0
) -> tuple[bytes | None, bytes | None] | None:
    """The key and value at ``offset``, or None if the log does not hold it.

    Asked of the log itself rather than of its watermarks, which some brokers report
    wrong. Raises :class:`BrokerUnavailable` if the broker does not say within ``timeout``.
    """
    config = consumer_config(settings, group_id=f"{settings.topic_prefix}streams-readback")
    config.update({"auto.offset.reset": "error", "enable.partition.eof": True})
    consumer = Consumer(config)
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        tp = TopicPartition(topic, partition)
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            msg = consumer.poll(0.25)
            if msg is None:
                # Silence: past the log's end on some brokers (others answer out-of-range
                # or end-of-partition), or a slow broker. The watermark tells which; a
                # wrong one is only ever too low, and then the record would have come.
                if time.monotonic() - started > SILENCE_SECONDS and _high(consumer, tp) <= offset:
                    return None
                continue
            err = msg.error()
            if err is not None:
                if err.code() in _PAST_THE_END:
                    return None
                continue
            found = msg.offset()
            if found == offset:
                return msg.key(), msg.value()
            if found is not None and found > offset:
                return None
        raise BrokerUnavailable(f"{topic}/{partition} did not answer for offset {offset}")
    finally:
        consumer.close()


class Sink:
    """One idempotent producer for examples, deadletters and the state changelog."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        config = producer_config(
            settings,
            **{
                "linger.ms": 2,
            },
        )
        self._producer = Producer(config)
        self._errors: list[str] = []
        self._ends: dict[tuple[str, int], int] = {}
        self._partitions: dict[str, int] = {}

    def partitions(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            metadata = self._producer.list_topics(topic, timeout=10).topics[topic]
            count = self._partitions[topic] = len(metadata.partitions)
        return count

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err.str()}")
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            return
        key = (topic, partition)
        if offset + 1 > self._ends.get(key, 0):
            self._ends[key] = offset + 1

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        # Every record reports: one that failed (timed out in a stall, refused) fails the
        # flush, whatever landed after it.
        kwargs: dict[str, Any] = {"partition": partition, "on_delivery": self._delivered}
        if headers:
            kwargs["headers"] = headers
        try:
            self._producer.produce(topic, value, key, **kwargs)
        except BufferError:
            self._producer.flush(30)
            self._producer.produce(topic, value, key, **kwargs)

    def flush(self, timeout: float = 30.0) -> dict[tuple[str, int], int]:
        """Wait for every record to be acknowledged; the next offset of each partition written."""
        if self._producer.flush(timeout):
            raise BrokerUnavailable(f"outputs not acknowledged within {timeout:g}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise BrokerUnavailable(f"outputs were not delivered: {errors[0]}")
        ends, self._ends = self._ends, {}
        return ends

    def abandon(self, timeout: float) -> int:
        """Drop what is still queued and wait for what is in flight to land or fail, so
        nothing of an undone batch reaches the broker after it is read again; the number
        of records still unresolved after ``timeout``."""
        self._producer.purge(in_queue=True, in_flight=False)
        left = int(self._producer.flush(timeout))
        self._errors, self._ends = [], {}
        return left

    def close(self) -> None:
        self._producer.flush(10)


def read_back(
    settings: Settings,
    topic: str,
    partition: int,
    source: int,
    start: int | None,
    timeout: float = 30.0,
) -> Iterable[Message]:
    """Records of ``topic``/``partition`` from ``start`` to the current end that ``source`` emitted.

    Read to the end the broker reports while fetching (end-of-partition), not to a
    watermark asked beforehand, which some brokers report too low.
    """
    config = consumer_config(settings, group_id=f"{settings.topic_prefix}streams-readback")
    config.update({"enable.partition.eof": True, "auto.offset.reset": "error"})
    consumer = Consumer(config)
    try:
        tp = TopicPartition(topic, partition)
        low, _ = consumer.get_watermark_offsets(tp, timeout=timeout)
        begin = max(start or 0, int(low))
        consumer.assign([TopicPartition(topic, partition, begin)])
        wanted = str(source).encode()
        found: list[Message] = []
        next_offset = begin
        heard_at = time.monotonic()
        while time.monotonic() - heard_at < timeout:
            for msg in consumer.consume(10_000, 0.2):
                heard_at = time.monotonic()
                err = msg.error()
                if err is None:
                    next_offset = max(next_offset, (msg.offset() or 0) + 1)
                    if _headers(msg).get(SOURCE_PARTITION) == wanted:
                        found.append(msg)
                elif err.code() in _PAST_THE_END:
                    return found
            # Silence for a while with nothing past ``next_offset`` in the log (some brokers
            # say nothing at the end of a log that was replaced): the end was reached.
            if time.monotonic() - heard_at > SILENCE_SECONDS and _high(consumer, tp) <= next_offset:
                return found
        raise BrokerUnavailable(f"could not read back {topic}/{partition} to its end")
    finally:
        consumer.close()


def _headers(msg: Message) -> dict[str, bytes]:
    headers: Any = msg.headers() or []
    return {k: v if isinstance(v, bytes) else str(v or "").encode() for k, v in headers}


def emitted_examples(messages: Iterable[Message]) -> set[str]:
    ids: set[str] = set()
    for msg in messages:
        event_id = orjson.loads(msg.value() or b"{}").get("event_id")
        if isinstance(event_id, str):
            ids.add(event_id)
    return ids


def emitted_deadletters(messages: Iterable[Message], settings: Settings) -> set[tuple[str, int]]:
    names = {settings.topic(n).encode(): n for n in ("events", "labels")}
    found: set[tuple[str, int]] = set()
    for msg in messages:
        headers = _headers(msg)
        topic = names.get(headers.get("source_topic", b""))
        if topic is not None:
            found.add((topic, int(headers.get("source_offset", b"-1"))))
    return found
