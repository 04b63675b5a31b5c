"""The control channel: operator and monitor commands on the ``control`` topic.

Commands are keyed by scope (a model name, or ``*``), so one scope's commands stay in
order. Workers read the topic from the beginning on start to rebuild their state
(paused or not, anomalous windows, kill switch), then follow it.
"""

from __future__ import annotations

import contextlib
import getpass
import heapq
import os
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from loopline.contracts import Command, CommandKind, utcnow
from loopline.errors import BrokerUnavailable, RecordError
from loopline.kafka import consumer_config, end_offsets, producer_config
from loopline.settings import Settings

ALL_SCOPES = "*"


def make_command(
    kind: CommandKind,
    scope: str = ALL_SCOPES,
    *,
    reason: str = "",
    args: Mapping[str, Any] | None = None,
    evidence: Mapping[str, Any] | None = None,
    issued_by: str | None = None,
) -> Command:
    return Command(
        command_id=os.urandom(8).hex(),
        kind=kind,
        scope=scope,
        issued_at=utcnow(),
        issued_by=issued_by or f"{getpass.getuser()}@{os.uname().nodename}",
        reason=reason,
        args=dict(args or {}),
        evidence=dict(evidence or {}),
    )


def send(settings: Settings, command: Command, timeout: float = 10.0) -> Command:
    """Publish one command and wait until the broker has it."""
    producer = Producer(producer_config(settings))
    producer.produce(settings.topic("control"), command.to_json(), command.scope.encode())
    if producer.flush(timeout):
        raise BrokerUnavailable(
            f"control command not acknowledged by {settings.kafka_bootstrap} within {timeout:g}s"
        )
    return command


def read_all(settings: Settings, timeout: float = 10.0) -> list[Command]:
    """Every command on the topic so far (bad records skipped).

    Each partition's commands keep their topic order (a scope's commands stay in the
    order they were sent); partitions are merged by ``issued_at``.
    """
    topic = settings.topic("control")
    consumer = Consumer(
        consumer_config(settings, group_id=f"{settings.topic_prefix}control-reader")
    )
    deadline = time.monotonic() + timeout
    try:
        ends = {p: end for p, end in end_offsets(consumer, topic, timeout).items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        per_partition: dict[int, list[Command]] = {p: [] for p in ends}
        while ends:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"could not read {topic} to its end within {timeout:g}s")
            for msg in consumer.consume(1000, 0.5):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() is not None or partition is None or offset is None:
                    continue
                with contextlib.suppress(RecordError):  # not ours to judge: skip, keep reading
                    per_partition[partition].append(Command.from_json(msg.value() or b""))
                if partition in ends and offset + 1 >= ends[partition]:
                    del ends[partition]
        return list(heapq.merge(*per_partition.values(), key=lambda c: c.issued_at))
    finally:
        consumer.close()


def applies_to(command: Command, model_name: str) -> bool:
    return command.scope in (ALL_SCOPES, model_name)
