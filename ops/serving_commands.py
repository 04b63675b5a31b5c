"""Operator commands for the serving side of the loop; merged into the ``loopline`` command.

They change the routing state in Redis directly, through :mod:`loopline.routing_actions`,
rather than sending a Command for the pusher to apply: serving follows Redis within a
second, so a rollback or the kill switch works even while the pusher is down or
stuck and the broker is unreachable. Each change is one optimistic transaction that
re-checks the ramp state machine, so an operator and the pusher never overwrite each
other, and each is logged (``loopline routes`` shows the log). Scripts and monitors
that prefer the ``control`` topic get the same actions from the pusher.

A rollback or a pin holds: the pusher pushes nothing automatically until
``loopline unpin``, so the next checkpoint of a bad lineage cannot undo the rollback.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loopline import routing_actions as actions
from loopline.cli_settings import settings_of
from loopline.routing import RampStatus, RoutingStore
from loopline.settings import Settings

app = typer.Typer()
ramp_app = typer.Typer(help="Pause, resume or abort the ramp in progress.", no_args_is_help=True)
app.add_typer(ramp_app, name="ramp")
console = Console()

Reason = Annotated[str, typer.Option(help="Why; recorded with the change.")]


def _operator() -> str:
    return f"{getpass.getuser()}@{os.uname().nodename}"


@contextmanager
def _routing(ctx: typer.Context) -> Iterator[tuple[Settings, RoutingStore]]:
    settings = settings_of(ctx)
    store = RoutingStore(settings)
    try:
        yield settings, store
    finally:
        store.close()


@app.command()
def rollback(
    ctx: typer.Context,
    to: Annotated[
        str | None,
        typer.Option(
            help="Checkpoint to serve (default: a ramp's baseline, else the previous champion)."
        ),
    ] = None,
    reason: Reason = "operator rollback",
) -> None:
    """Serve the previous champion (or --to CHECKPOINT) to everyone, and pin it."""
    with _routing(ctx) as (settings, store):
        table = actions.rollback(settings, store, to, reason, _operator())
    console.print(
        f"serving {table.champion} to everyone (routing v{table.version}); "
        "pinned: `loopline unpin` resumes pushes"
    )


@app.command()
def pin(ctx: typer.Context, checkpoint: str, reason: Reason = "operator pin") -> None:
    """Serve CHECKPOINT to everyone and hold automatic pushes until `loopline unpin`."""
    with _routing(ctx) as (settings, store):
        table = actions.pin(settings, store, checkpoint, reason, _operator())
    console.print(f"pinned {checkpoint} (routing v{table.version})")


@app.command()
def unpin(ctx: typer.Context) -> None:
    """Let the pusher push qualified checkpoints again."""
    with _routing(ctx) as (_, store):
        actions.unpin(store)
    console.print("unpinned: the pusher pushes qualified checkpoints again")


def _move_ramp(ctx: typer.Context, status: RampStatus, reason: str) -> None:
    with _routing(ctx) as (_, store):
        ramp = actions.move_ramp(store, status, reason, _operator())
    console.print(f"ramp of {ramp.candidate} is {ramp.status} at {ramp.percent:g}%")


@ramp_app.command("pause")
def ramp_pause(ctx: typer.Context, reason: Reason = "operator pause") -> None:
    """Hold the candidate at its current share (guardrails keep watching)."""
    _move_ramp(ctx, RampStatus.PAUSED, reason)


@ramp_app.command("resume")
def ramp_resume(ctx: typer.Context, reason: Reason = "operator resume") -> None:
    """Continue a paused ramp; the stage keeps the dwell time it had."""
    _move_ramp(ctx, RampStatus.RAMPING, reason)


@ramp_app.command("abort")
def ramp_abort(ctx: typer.Context, reason: Reason = "operator abort") -> None:
    """End the ramp: the baseline serves everyone again."""
    _move_ramp(ctx, RampStatus.ABORTED, reason)


@app.command("kill-switch")
def kill_switch(
    ctx: typer.Context,
    state: Annotated[str, typer.Argument(help="on or off")],
    reason: Reason = "",
) -> None:
    """Answer every request from the spec's fallback (on), or from the models again (off)."""
    if state not in ("on", "off"):
        raise typer.BadParameter("state must be 'on' or 'off'")
    with _routing(ctx) as (_, store):
        store.set_kill_switch(state == "on", reason, _operator())
    console.print(f"kill switch {state}")


@app.command()
def routes(ctx: typer.Context) -> None:
    """Show the routing table, the ramp, the kill switch, the pin and recent changes."""
    with _routing(ctx) as (_, store):
        table, ramp, kill = store.table(), store.ramp(), store.kill_switch()
        pinned, entries = store.pinned(), store.log(10)
    out = Table(title=f"routing v{table.version} (champion {table.champion or '-'})")
    out.add_column("checkpoint")
    out.add_column("share", justify="right")
    for route in table.routes:
        out.add_row(route.checkpoint_id, f"{route.percent:g}%")
    console.print(out)
    if ramp is not None:
        console.print(
            f"ramp: {ramp.candidate} vs {ramp.baseline}: {ramp.status} at stage {ramp.stage + 1}/"
            f"{len(ramp.stages)} ({ramp.percent:g}%){' - ' + ramp.reason if ramp.reason else ''}"
        )
    console.print(
        f"kill switch: {'ON' if kill.on else 'off'}{' - ' + kill.reason if kill.reason else ''}"
    )
    console.print(f"pinned: {pinned or '-'}")
    for entry in entries:
        console.print(f"  {entry['at']}  {entry['by']}: {entry['action']}")
