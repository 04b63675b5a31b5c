"""The control channel: operator and monitor commands on the ``control`` topic.

Commands are keyed by scope (a model name, or ``*``), so one scope's commands stay in
order. Workers read the topic from the beginning on start to rebuild their state
(paused or not, anomalous windows, kill switch), then follow it.

The topic is kept forever and anyone with write access can put bytes on it, so a
record that holds no Command is skipped and counted (:func:`decode`,
:attr:`ControlLog.unreadable`): one bad record must not stop every reader for good.
Nor does writing to the topic make anyone an operator: a Command is signed by the
operator key its ``issued_by`` names (:func:`issue`), and readers holding operator
keys apply only Commands whose signature verifies (:mod:`loopline.signing.commands`);
the others are refused, logged with why and counted (:attr:`ControlLog.refused`).
"""

from __future__ import annotations

import getpass
import heapq
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer

from loopline.contracts import Command, CommandKind, utcnow
from loopline.errors import BrokerUnavailable, RecordError
from loopline.kafka import producer_config, read_tail
from loopline.settings import Settings
from loopline.signing.commands import OperatorKeys, operator_keys, require_operator, sign_command

log = logging.getLogger(__name__)

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


def issue(
    settings: Settings,
    kind: CommandKind,
    scope: str = ALL_SCOPES,
    *,
    reason: str = "",
    args: Mapping[str, Any] | None = None,
    evidence: Mapping[str, Any] | None = None,
    issued_by: str | None = None,
) -> Command:
    """A Command signed by this process's operator key (``LOOPLINE_OPERATOR_KEY``), whose
    name it is then issued by; unsigned, as ``issued_by`` or the user, only in
    development mode without one (ConfigError elsewhere)."""
    signer = require_operator(settings, f"a {kind.value} command")
    command = make_command(
        kind, scope, reason=reason, args=args, evidence=evidence, issued_by=issued_by
    )
    return command if signer is None else sign_command(command, signer)


def send(settings: Settings, command: Command, timeout: float = 10.0) -> Command:
    """Publish one command and wait until the broker has it."""
    producer = Producer(producer_config(settings))
    producer.produce(settings.topic("control"), command.to_json(), command.scope.encode())
    if producer.flush(timeout):
        raise BrokerUnavailable(
            f"control command not acknowledged by {settings.kafka_bootstrap} within {timeout:g}s"
        )
    return command


def decode(value: bytes | None, where: str = "", level: int = logging.WARNING) -> Command | None:
    """The Command in one ``control`` record, or None (logged) if it holds none."""
    try:
        return Command.from_json(value or b"")
    except RecordError as exc:  # not ours to judge: skip, keep reading
        log.log(level, "skipping an unreadable control record%s: %s", where and f" at {where}", exc)
        return None


@dataclass(frozen=True, slots=True)
class Refused:
    """A Command a reader does not apply: its signature does not prove who issued it."""

    command: Command
    why: str


def admit(keys: OperatorKeys, command: Command, level: int = logging.WARNING) -> Refused | None:
    """None if ``command`` may apply; else why not (logged at ``level``)."""
    why = keys.refusal(command)
    if why is None:
        return None
    log.log(level, "refusing a control command issued as %s: %s", command.issued_by, why)
    return Refused(command, why)


@dataclass(frozen=True, slots=True)
class ControlLog:
    """Every command on ``control`` so far that may apply, how many records held none,
    and the commands refused for their signature."""

    commands: list[Command]
    unreadable: int = 0
    refused: list[Refused] = field(default_factory=list)


def read_log(
    settings: Settings, timeout: float = 10.0, keys: OperatorKeys | None = None
) -> ControlLog:
    """Every command on the topic so far; records that hold none, and commands that are
    not signed by an operator key in ``keys`` (:func:`operator_keys` by default), are
    counted, not fatal.

    Each partition's commands keep their topic order (a scope's commands stay in the
    order they were sent); partitions are merged by ``issued_at``. A command id seen
    again is dropped, as every reader does: a copy of an old signed pause, put back on
    the topic, pauses nothing.
    """
    keys = operator_keys(settings) if keys is None else keys
    per_partition: dict[int, list[Command]] = {}
    unreadable = 0
    refused = []
    for record in read_tail(settings, "control", timeout=timeout):
        # Readers that rebuild state from the start see old bad records every time.
        command = decode(record.value, f"{record.partition}/{record.offset}", logging.DEBUG)
        if command is None:
            unreadable += 1
        elif (no := admit(keys, command, logging.DEBUG)) is not None:
            refused.append(no)
        else:
            per_partition.setdefault(record.partition, []).append(command)
    merged = heapq.merge(*per_partition.values(), key=lambda c: c.issued_at)
    # A Command sent again (a retried send, a copied record) is the same Command, once.
    once: dict[str, Command] = {}
    for command in merged:
        once.setdefault(command.command_id, command)
    return ControlLog(list(once.values()), unreadable, refused)


def read_all(settings: Settings, timeout: float = 10.0) -> list[Command]:
    """Every command on the topic so far (unreadable records skipped; see :func:`read_log`)."""
    return read_log(settings, timeout).commands


def applies_to(command: Command, model_name: str) -> bool:
    return command.scope in (ALL_SCOPES, model_name)
