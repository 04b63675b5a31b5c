"""Operator commands for training; merged into the ``loopline`` command.

Each change is one auditable :class:`~loopline.contracts.Command` on ``control`` (who,
when, why) that every trainer in scope (``--model``, all by default) applies, now or
when it next starts. Before sending, a command is checked against what ``control``
already says is in force: one that cannot apply says why and sends nothing. After
sending, the command waits (``--wait``) until each running trainer reports it applied
(or refused, with why). Only sending needs the broker: with Redis down, where
heartbeats live, a command still goes out, but whether it applied cannot be confirmed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import orjson
import redis
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loopline.checkpoints import CheckpointStore
from loopline.cli_settings import settings_of
from loopline.contracts import Command, CommandKind, Window, parse_ts
from loopline.control import ALL_SCOPES, issue, read_log, send
from loopline.control_state import ControlState, Mark
from loopline.errors import CheckpointError, RecordError
from loopline.settings import Settings
from ops.acknowledge import await_applied, live_trainers

app = typer.Typer()
anomaly_app = typer.Typer(help="Fence off event-time windows training must not learn from.")
checkpoints_app = typer.Typer(help="The trainer's checkpoints.")
app.add_typer(anomaly_app, name="anomaly")
app.add_typer(checkpoints_app, name="checkpoints")
console = Console()
errors = Console(stderr=True)

Model = Annotated[str, typer.Option("--model", help="Model (spec name) in scope; all by default.")]
Reason = Annotated[str, typer.Option(help="Why; recorded with the command.")]
Wait = Annotated[
    float, typer.Option(min=0, help="Seconds to wait for running trainers to apply it.")
]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def refuse(message: str) -> typer.Exit:
    """Say why a command cannot apply; it was not sent."""
    errors.print(f"[red]refused:[/red] {escape(message)} (nothing sent)")
    return typer.Exit(1)


def models_in_scope(settings: Settings, scope: str) -> list[str]:
    """The model named, or every model known: the spec's and each running trainer's."""
    if scope != ALL_SCOPES:
        return [scope]
    names = {settings.load_spec().name}
    try:
        names |= {str(w.state.get("model")) for w in live_trainers(settings)}
    except redis.RedisError as exc:  # heartbeats are out of reach, not the control topic
        errors.print(
            f"[yellow]cannot read heartbeats ({escape(str(exc))}): "
            "judging by the spec's model[/yellow]"
        )
    return sorted(names)


def states(settings: Settings, scope: str) -> dict[str, ControlState]:
    """What ``control`` says is in force for each model in scope; records there that hold
    no command change nothing and are counted here, never fatal."""
    control = read_log(settings)
    if control.unreadable:
        errors.print(
            f"[yellow]{control.unreadable} records on control are not readable commands: "
            "skipped[/yellow]"
        )
    if control.refused:
        errors.print(
            f"[yellow]{len(control.refused)} commands on control are not signed by an operator "
            "key the workers hold: not applied (`loopline history`)[/yellow]"
        )
    return {m: ControlState.fold(control.commands, m) for m in models_in_scope(settings, scope)}


def deliver(settings: Settings, command: Command, wait: float) -> None:
    """Send, then report whether the running trainers applied it within ``wait`` seconds."""
    command = send(settings, command)
    console.print(
        escape(
            f"sent {command.kind.value} to {command.scope} as {command.issued_by} "
            f"(command {command.command_id})"
        )
    )
    if wait <= 0:
        return
    try:
        ack = await_applied(settings, command, wait)
    except redis.RedisError as exc:
        errors.print(
            f"[yellow]cannot confirm it applied: heartbeats unreadable ({exc})[/yellow]; "
            "it stays on control"
        )
        raise typer.Exit(1) from None
    if ack.applied:
        console.print(escape(f"applied by {', '.join(ack.applied)} within {ack.seconds:.1f}s"))
    for name, why in sorted(ack.refused.items()):
        errors.print(f"[red]sent, but {escape(name)} cannot apply it:[/red] {escape(why)}")
    if ack.pending:
        errors.print(
            f"[yellow]not applied by {escape(', '.join(ack.pending))} within {wait:g}s[/yellow]: "
            "it stays on control; see `loopline status`"
        )
        raise typer.Exit(1)
    if ack.refused:
        raise typer.Exit(1)
    if not ack.applied:
        console.print("no trainer in scope is running: it applies when one starts")


@app.command()
def pause(ctx: typer.Context, reason: Reason, model: Model = ALL_SCOPES, wait: Wait = 10) -> None:
    """Stop learning; trainers keep their position and their place in the group."""
    settings = settings_of(ctx)
    in_scope = states(settings, model)
    if all(s.paused for s in in_scope.values()):
        held = next(s.pause for s in in_scope.values() if s.pause is not None)
        raise refuse(
            f"training is already paused (since {held.issued_at:%Y-%m-%d %H:%M:%S} "
            f"by {held.issued_by}: {held.reason or 'no reason given'})"
        )
    deliver(settings, issue(settings, CommandKind.PAUSE, model, reason=reason), wait)


@app.command()
def resume(
    ctx: typer.Context, model: Model = ALL_SCOPES, reason: Reason = "", wait: Wait = 10
) -> None:
    """Resume learning where it paused."""
    settings = settings_of(ctx)
    if not any(s.paused for s in states(settings, model).values()):
        raise refuse("training is not paused")
    deliver(settings, issue(settings, CommandKind.RESUME, model, reason=reason), wait)


def _window(start: str, end: str) -> Window:
    try:
        return Window(parse_ts(start, "--start"), parse_ts(end, "--end"))
    except (RecordError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None


@anomaly_app.command("mark")
def anomaly_mark(
    ctx: typer.Context,
    start: Annotated[str, typer.Option(help="Window start, RFC 3339 with offset (inclusive).")],
    end: Annotated[str, typer.Option(help="Window end, RFC 3339 with offset (exclusive).")],
    reason: Reason,
    model: Model = ALL_SCOPES,
    wait: Wait = 10,
) -> None:
    """Never learn examples whose event time is in [start, end), also on replay."""
    window = _window(start, end)
    settings = settings_of(ctx)
    for state in states(settings, model).values():
        for mark in state.marks.values():
            if mark.window == window:
                raise refuse(f"{_span(window)} is already marked anomalous as {mark.mark_id}")
    args = {"start": window.start.isoformat(), "end": window.end.isoformat()}
    command = issue(settings, CommandKind.MARK_ANOMALOUS, model, reason=reason, args=args)
    deliver(settings, command, wait)
    console.print(
        f"anomaly id {command.command_id} (`loopline anomaly clear {command.command_id}`)"
    )


def _span(window: Window) -> str:
    return f"[{window.start.isoformat()}, {window.end.isoformat()})"


def _marks(settings: Settings, model: str) -> dict[str, tuple[str, Mark]]:
    return {
        mark.mark_id: (name, mark)
        for name, state in states(settings, model).items()
        for mark in state.marks.values()
    }


@anomaly_app.command("list")
def anomaly_list(ctx: typer.Context, model: Model = ALL_SCOPES, as_json: Json = False) -> None:
    """Windows marked anomalous and still in force."""
    marks = _marks(settings_of(ctx), model)
    if as_json:
        rows = [
            {
                "id": m.mark_id,
                "model": name,
                "start": m.window.start,
                "end": m.window.end,
                "reason": m.reason,
                "by": m.by,
                "at": m.at,
            }
            for name, m in marks.values()
        ]
        console.out(orjson.dumps(rows).decode(), highlight=False)
        return
    table = Table(title="anomalous windows in force")
    for column in ("id", "model", "start", "end", "reason", "marked by", "at"):
        table.add_column(column, no_wrap=column == "id")
    for name, m in marks.values():
        cells = (m.mark_id, name, m.window.start.isoformat(), m.window.end.isoformat())
        table.add_row(*(Text(c) for c in (*cells, m.reason, m.by, _when(m.at))))
    console.print(table)


def _when(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds")


@anomaly_app.command("clear")
def anomaly_clear(
    ctx: typer.Context,
    mark_id: Annotated[str, typer.Argument(metavar="ID", help="The id `anomaly list` shows.")],
    reason: Reason = "",
    wait: Wait = 10,
) -> None:
    """Learn that window again from now on (what was skipped stays skipped until a replay)."""
    settings = settings_of(ctx)
    found = _marks(settings, ALL_SCOPES).get(mark_id)
    if found is None:
        raise refuse(f"no anomalous window {mark_id} is in force (see `loopline anomaly list`)")
    _, mark = found
    args = {
        "id": mark_id,
        "start": mark.window.start.isoformat(),
        "end": mark.window.end.isoformat(),
    }
    command = issue(settings, CommandKind.CLEAR_ANOMALOUS, mark.scope, reason=reason, args=args)
    deliver(settings, command, wait)


@app.command()
def replay(
    ctx: typer.Context,
    from_checkpoint: Annotated[
        str, typer.Option("--from", help="Checkpoint id to retrain from (see `checkpoints list`).")
    ],
    reason: Reason,
    wait: Wait = 0,
) -> None:
    """Retrain from an earlier checkpoint up to now, as a new lineage, skipping excluded windows.

    The way to undo an anomalous stretch learned before it was marked.
    """
    settings = settings_of(ctx)
    try:
        manifest = CheckpointStore.of(settings).verified(from_checkpoint)
    except CheckpointError as exc:
        raise refuse(f"cannot replay from {from_checkpoint}: {exc}") from None
    spec = settings.load_spec()
    identity = (manifest.spec_version, manifest.schema_hash)
    if manifest.model_name == spec.name and identity != (spec.spec_version, spec.schema_hash):
        raise refuse(
            f"cannot replay from {from_checkpoint}: it is {spec.name} v{manifest.spec_version} "
            f"schema {manifest.schema_hash}; the trainer runs v{spec.spec_version} "
            f"schema {spec.schema_hash}"
        )
    command = issue(
        settings,
        CommandKind.REPLAY,
        manifest.model_name,
        reason=reason,
        args={"from": from_checkpoint},
    )
    deliver(settings, command, wait)
    console.print(f"the new lineage will be replay-{command.command_id}")


@checkpoints_app.command("list")
def checkpoints_list(ctx: typer.Context, model: Model = ALL_SCOPES, as_json: Json = False) -> None:
    """Checkpoints, newest first, with lineage, offsets, metrics and whether they verify."""
    settings = settings_of(ctx)
    store = CheckpointStore.of(settings)
    rows = []
    for manifest in store.manifests(None if model == ALL_SCOPES else model):
        try:
            store.verified(manifest.checkpoint_id)
            verified = "yes"
        except CheckpointError as exc:
            verified = f"NO: {exc}"
        metrics = {
            k: v
            for k, v in manifest.metrics.items()
            if v is not None and "@" not in k and not k.startswith("examples_")
        }
        rows.append((manifest, metrics, verified))
    if as_json:
        out = [
            {
                "id": m.checkpoint_id,
                "model": m.model_name,
                "spec_version": m.spec_version,
                "lineage": m.lineage,
                "parent": m.parent_id,
                "created_at": m.created_at,
                "examples_seen": m.examples_seen,
                "offsets": m.offsets,
                "metrics": metrics,
                "verified": verified,
            }
            for m, metrics, verified in rows
        ]
        console.out(orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS).decode(), highlight=False)
        return
    table = Table(title=str(settings.checkpoint_dir))
    table.add_column("id", no_wrap=True)
    for column in (
        "model",
        "lineage",
        "parent",
        "created",
        "seen",
        "offsets",
        "metrics",
        "verified",
    ):
        table.add_column(column)
    for m, metrics, verified in rows:
        cells = (
            m.checkpoint_id,
            f"{m.model_name} v{m.spec_version}",
            m.lineage,
            m.parent_id or "-",
            _when(m.created_at),
            str(m.examples_seen),
            " ".join(f"{p}:{o}" for p, o in m.offsets.items()),
            ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()),
            verified,
        )
        table.add_row(*(Text(c) for c in cells))  # as written, never read as markup
    console.print(table)
