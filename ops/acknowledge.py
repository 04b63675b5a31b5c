"""Did a command take effect? Workers list the commands they applied, or refused with
why, in their heartbeats."""

from __future__ import annotations

import time
from dataclasses import dataclass

from loopline import heartbeat
from loopline.contracts import Command
from loopline.control import ALL_SCOPES
from loopline.settings import Settings


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    applied: list[str]
    refused: dict[str, str]  # worker -> why it could not apply the command
    pending: list[str]
    seconds: float


def live_trainers(settings: Settings, scope: str = ALL_SCOPES) -> list[heartbeat.WorkerStatus]:
    """Trainers beating now whose model is in ``scope``."""
    return [
        w
        for w in heartbeat.read(settings)
        if w.name.startswith("trainer.")
        and w.age() < heartbeat.STALE_SECONDS
        and scope in (ALL_SCOPES, w.state.get("model"))
    ]


def await_applied(settings: Settings, command: Command, timeout: float) -> Acknowledgement:
    """Wait until every live trainer in the command's scope reports it applied or refused."""
    started = time.monotonic()
    names = {w.name for w in live_trainers(settings, command.scope)}
    applied: set[str] = set()
    refused: dict[str, str] = {}
    while True:
        for worker in heartbeat.read(settings):
            if worker.name not in names:
                continue
            if command.command_id in worker.applied:
                applied.add(worker.name)
            elif command.command_id in worker.refused_commands:
                refused[worker.name] = worker.refused_commands[command.command_id]
        elapsed = time.monotonic() - started
        pending = names - applied - set(refused)
        if not pending or elapsed >= timeout:
            return Acknowledgement(sorted(applied), refused, sorted(pending), elapsed)
        time.sleep(0.2)
