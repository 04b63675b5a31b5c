"""The demo's on-call engineer: what they decide, and the commands they type.

Decisions live in :meth:`Operator.look`: read the monitor's auto-pauses, fence off the
bot burst as an anomalous window once it is over, resume training. Each action is one
method that prints the ``loopline`` command line an operator would type and does what
that command does through the same library calls.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape

from loopline import routing_actions
from loopline.contracts import Command, CommandKind, utcnow
from loopline.control import issue, send
from loopline.routing import RoutingStore, RoutingTable
from loopline.settings import Settings

OPERATOR = "demo-operator"
#: How far the fenced window reaches beyond the burst on either side.
MARGIN = timedelta(seconds=5)
#: With no auto-pause, how long after the burst the operator still fences it.
PATIENCE = timedelta(seconds=30)


def describe_breaches(evidence: dict[str, Any]) -> str:
    """``volume_ratio 5.1 (baseline 98, limit 3)`` for each breach in a pause's evidence."""
    parts = []
    for breach in evidence.get("breaches", []):
        text = f"{breach.get('check', '?')}"
        if breach.get("feature"):
            text += f"[{breach['feature']}]"
        if isinstance(breach.get("value"), int | float):
            text += f" {_number(breach['value'])}"
        extra = [f"{k} {_number(breach[k])}" for k in ("baseline", "limit") if k in breach]
        parts.append(f"{text} ({', '.join(extra)})" if extra else text)
    return "; ".join(parts)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


class Operator:
    def __init__(
        self,
        settings: Settings,
        console: Console,
        send: Callable[[Settings, Command], Command] = send,
    ) -> None:
        self.settings, self.console, self._send = settings, console, send
        self.burst: tuple[datetime, datetime] | None = None  # as the traffic dashboard shows it
        self.paused_by_monitor = False
        self.fenced = False

    # -- decisions -----------------------------------------------------------------

    def look(self, commands: Iterable[Command], now: datetime | None = None) -> None:
        """React to the new commands on ``control`` and to the time."""
        now = now or utcnow()
        for command in commands:
            if command.kind is not CommandKind.PAUSE or command.issued_by == OPERATOR:
                continue
            if self.fenced:  # the burst's defaulted labels land a horizon later
                self._note("paused again by the burst's own labels, already fenced off: resume")
                self.resume("after-effect of the fenced bot burst")
            else:
                self.paused_by_monitor = True
        if self.fenced or self.burst is None or now < self.burst[1] + MARGIN:
            return
        start, end = self.burst
        if self.paused_by_monitor or now > end + PATIENCE:
            self._note("the bot burst is over: fence it off so no model learns from it, resume")
            self.mark_anomalous(start - MARGIN, end + MARGIN, "bot burst")
            self.fenced = True
            self.resume("bot burst fenced off")

    # -- actions: one per command --------------------------------------------------

    def _note(self, thought: str) -> None:
        self.console.print(f"[cyan]operator: {escape(thought)}[/cyan]")

    def _say(self, *argv: str) -> None:
        self.console.print(f"[bold cyan]$ {escape(shlex.join(argv))}[/bold cyan]")

    def mark_anomalous(self, start: datetime, end: datetime, reason: str) -> Command:
        first, last = start.isoformat(timespec="seconds"), end.isoformat(timespec="seconds")
        self._say(
            "loopline", "anomaly", "mark", "--start", first, "--end", last, "--reason", reason
        )
        args = {"start": start.isoformat(), "end": end.isoformat()}
        return self._send(
            self.settings,
            issue(
                self.settings,
                CommandKind.MARK_ANOMALOUS,
                reason=reason,
                issued_by=OPERATOR,
                args=args,
            ),
        )

    def resume(self, reason: str) -> Command:
        self._say("loopline", "resume")
        kind = CommandKind.RESUME
        command = issue(self.settings, kind, reason=reason, issued_by=OPERATOR)
        return self._send(self.settings, command)

    def rollback(self, store: RoutingStore, reason: str, to: str | None = None) -> RoutingTable:
        self._say("loopline", "rollback", *(["--to", to] if to else []), "--reason", reason)
        return routing_actions.rollback(self.settings, store, to, reason, OPERATOR)
