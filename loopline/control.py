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
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Producer

from loopline.contracts import Command, CommandKind, utcnow
from loopline.errors import BrokerUnavailable, RecordError
from loopline.kafka import producer_config, read_tail
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
    per_partition: dict[int, list[Command]] = {}
    for record in read_tail(settings, "control", timeout=timeout):
        with contextlib.suppress(RecordError):  # not ours to judge: skip, keep reading
            command = Command.from_json(record.value or b"")
            per_partition.setdefault(record.partition, []).append(command)
    return list(heapq.merge(*per_partition.values(), key=lambda c: c.issued_at))


def applies_to(command: Command, model_name: str) -> bool:
    return command.scope in (ALL_SCOPES, model_name)
