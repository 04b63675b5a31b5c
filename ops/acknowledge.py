"""Did a command take effect? Workers list the commands they applied in their heartbeats."""

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
    """Wait until every live trainer in the command's scope reports it applied."""
    started = time.monotonic()
    names = {w.name for w in live_trainers(settings, command.scope)}
    applied: set[str] = set()
    while True:
        for worker in heartbeat.read(settings):
            if worker.name in names and command.command_id in worker.applied:
                applied.add(worker.name)
        elapsed = time.monotonic() - started
        if applied == names or elapsed >= timeout:
            return Acknowledgement(sorted(applied), sorted(names - applied), elapsed)
        time.sleep(0.2)
