"""Lines the demo prints about what the loop did: checkpoints judged, pauses, ramps.

Each function turns one kind of news from :class:`~ops.demo_watch.Watch` into console
markup; :func:`narrate` prints everything new from one poll.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape

from loopline.contracts import Command, CommandKind
from loopline.routing import RampState, RampStatus
from ops.demo_operator import OPERATOR, describe_breaches
from ops.demo_watch import News, Watch

_CHECKPOINT_ID = re.compile(r"[\w.]+-\d{8}T\d{12}-[0-9a-f]{6}")


def shorten(watch: Watch, text: str) -> str:
    """Checkpoint ids in ``text`` as the narration names them (``v1·4cfd37``), escaped."""
    return escape(_CHECKPOINT_ID.sub(lambda m: watch.name(m.group(0)), text))


def clock(started: datetime, at: datetime) -> str:
    """``+ 75s``: time since the demo started, the plot's x axis."""
    return f"+{(at - started).total_seconds():4.0f}s"


def _figure(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.4f}"


def verdict_line(watch: Watch, verdict: dict[str, Any]) -> str:
    cid = str(verdict.get("checkpoint_id"))
    manifest = watch.manifest(cid)
    metric = watch.metric
    learned = ""
    if manifest is not None:
        progressive = manifest.metrics.get(metric)
        holdout = manifest.metrics.get(f"holdout_{metric}")
        learned = (
            f"{manifest.examples_seen:,} examples learned, {metric} {_figure(progressive)} "
            f"(holdout {_figure(holdout)}) "
        )
    name = escape(watch.name(cid))
    if verdict.get("action") == "not judged":  # a newer one came while the holdout filled
        return f"[dim]checkpoint {name}: {learned}→ not judged: {shorten(watch, _reasons(verdict))}[/dim]"
    if verdict.get("verdict") == "qualified":
        return f"checkpoint {name}: {learned}→ [green]qualified[/green]: {shorten(watch, str(verdict.get('action')))}"
    return f"checkpoint {name}: {learned}→ [red]refused[/red]: {shorten(watch, _reasons(verdict))}"


def _reasons(verdict: dict[str, Any]) -> str:
    return "; ".join(str(r) for r in verdict.get("reasons", ()))


def command_line(command: Command) -> str | None:
    """Commands others sent (the operator's own show as the command lines it typed)."""
    if command.issued_by == OPERATOR:
        return None
    if command.kind is CommandKind.PAUSE:
        evidence = describe_breaches(command.evidence) or command.reason
        window = command.evidence.get("window", {})
        seen = f" in the window from {window['start'][11:19]}" if "start" in window else ""
        return (
            f"[bold yellow]training auto-paused by {escape(command.issued_by)}{seen}: "
            f"{escape(evidence)}[/bold yellow]"
        )
    return (
        f"control: {command.kind.value} by {escape(command.issued_by)} ({escape(command.reason)})"
    )


def ramp_line(watch: Watch, ramp: RampState) -> str:
    candidate, baseline = escape(watch.name(ramp.candidate)), escape(watch.name(ramp.baseline))
    if ramp.status is RampStatus.RAMPING:
        rest = "" if ramp.percent >= 100 else f", {baseline} the rest"
        return (
            f"[magenta]ramp: {candidate} serves {ramp.percent:g}% of shoppers{rest} "
            f"(stage {ramp.stage + 1} of {len(ramp.stages)}, {ramp.dwell_seconds:g}s each)[/magenta]"
        )
    if ramp.status is RampStatus.PROMOTED:
        return f"[bold magenta]ramp: {candidate} promoted: it serves every shopper[/bold magenta]"
    reason = shorten(watch, ramp.reason)
    return f"[bold magenta]ramp of {candidate} {ramp.status.value}: {reason}[/bold magenta]"


def routing_line(watch: Watch, entry: dict[str, Any]) -> str | None:
    """Routing changes that no verdict or ramp line tells: rollbacks, pins, kill switch."""
    action, by = str(entry.get("action", "")), str(entry.get("by", ""))
    if action.startswith(("push ", "ramp ")) and by == "pusher":
        return None
    return f"[bold]routing: {shorten(watch, action)}[/bold] (by {escape(by)})"


def narrate(console: Console, watch: Watch, news: News) -> None:
    for command in news.commands:
        if (line := command_line(command)) is not None:
            console.print(line)
    for verdict in news.verdicts:
        console.print(verdict_line(watch, verdict))
    if news.ramp_moved and watch.ramp is not None:
        console.print(ramp_line(watch, watch.ramp))
    for entry in news.routing:
        if (line := routing_line(watch, entry)) is not None:
            console.print(line)
