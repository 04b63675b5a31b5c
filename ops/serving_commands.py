"""Operator commands for serving; merged into the ``loopline`` command.

A rollback, a pin, a ramp move or the kill switch is one auditable
:class:`~loopline.contracts.Command` (who, when, why), applied to the routing state in
Redis here, through :mod:`loopline.routing_actions`, and then recorded on ``control``.
Applying first means the stop button works while the pusher is down or stuck; serving
follows Redis within a second. The change and the record that the command was applied
are one Redis transaction, so the pusher, which applies the serving Commands it reads
on ``control`` for scripts and monitors, skips it; a Redis failure midway leaves
neither, and nothing is sent. One that cannot apply (nothing to roll back to, an
unqualified checkpoint, the kill switch already on) says why, changes nothing and
sends nothing. Every Redis call is bounded (``LOOPLINE_REDIS_TIMEOUT_SECONDS``): a
hung Redis is an error, never a hanging command.

A rollback or a pin holds: the pusher pushes nothing automatically until
``loopline unpin``, so the next checkpoint of a bad lineage cannot undo the rollback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import redis
import typer
from rich.console import Console
from rich.table import Table

from loopline import routing_actions as actions
from loopline.cli_settings import settings_of
from loopline.contracts import Command, CommandKind
from loopline.control import issue, send
from loopline.errors import BrokerUnavailable, LooplineError
from loopline.routing import Route, RoutingStore
from loopline.settings import Settings
from ops.training_commands import refuse

app = typer.Typer()
ramp_app = typer.Typer(help="Pause, resume or abort the ramp in progress.", no_args_is_help=True)
app.add_typer(ramp_app, name="ramp")
console = Console()
errors = Console(stderr=True)

Reason = Annotated[str, typer.Option(help="Why; recorded with the command.")]


@contextmanager
def _routing(ctx: typer.Context) -> Iterator[tuple[Settings, RoutingStore]]:
    settings = settings_of(ctx)
    store = RoutingStore(settings)
    try:
        yield settings, store
    except redis.RedisError as exc:  # the routing state is out of reach: say so, no traceback
        what = (
            f"did not answer within {settings.redis_timeout_seconds:g}s"
            if isinstance(exc, redis.TimeoutError)
            else "failed"
        )
        errors.print(
            f"[red]error:[/red] Redis {what} ({exc}); nothing was recorded on control, "
            "check the routing state with `loopline routes` once Redis answers"
        )
        raise typer.Exit(2) from None
    finally:
        store.close()


def _carry_out(
    ctx: typer.Context, kind: CommandKind, reason: str, args: dict[str, Any] | None = None
) -> str:
    """Apply one serving command to Redis, then record it on ``control``."""
    with _routing(ctx) as (settings, store):
        command = issue(settings, kind, settings.load_spec().name, reason=reason, args=args)
        try:
            done = actions.apply(settings, store, command)
        except LooplineError as exc:
            raise refuse(str(exc)) from None
    assert done is not None
    _record(settings, command)
    return done


def _record(settings: Settings, command: Command) -> None:
    try:
        send(settings, command)
    except BrokerUnavailable as exc:
        errors.print(
            f"[yellow]applied, but not recorded on control[/yellow] ({exc}); "
            "the routing log keeps it (`loopline routes`)"
        )
        raise typer.Exit(1) from None
    console.print(f"recorded as command {command.command_id} by {command.issued_by}")


@app.command()
def rollback(
    ctx: typer.Context,
    reason: Reason,
    to: Annotated[
        str | None,
        typer.Option(
            help="Checkpoint to serve (default: a ramp's baseline, else the previous champion)."
        ),
    ] = None,
) -> None:
    """Serve the previous champion (or --to CHECKPOINT) to everyone, and pin it."""
    with _routing(ctx) as (_, store):
        try:
            target = to or actions.rollback_target(store)
        except LooplineError as exc:
            raise refuse(str(exc)) from None
        table, ramp = store.table(), store.ramp()
    if table.routes == (Route(target, 100.0),) and not (ramp is not None and ramp.active):
        raise refuse(f"{target} already serves everyone (`loopline pin {target}` holds it)")
    done = _carry_out(ctx, CommandKind.ROLLBACK, reason, {"checkpoint": target})
    console.print(f"{done} for everyone; pinned: `loopline unpin` resumes pushes")


@app.command()
def pin(ctx: typer.Context, checkpoint: str, reason: Reason) -> None:
    """Serve CHECKPOINT to everyone and hold automatic pushes until `loopline unpin`."""
    console.print(_carry_out(ctx, CommandKind.PIN, reason, {"checkpoint": checkpoint}))


@app.command()
def unpin(ctx: typer.Context) -> None:
    """Let the pusher push qualified checkpoints again."""
    with _routing(ctx) as (_, store):
        if store.pinned() is None:
            raise refuse("nothing is pinned")
        actions.unpin(store)
    console.print("unpinned: the pusher pushes qualified checkpoints again")


@ramp_app.command("pause")
def ramp_pause(ctx: typer.Context, reason: Reason) -> None:
    """Hold the candidate at its current share (guardrails keep watching)."""
    console.print(_carry_out(ctx, CommandKind.PAUSE_RAMP, reason))


@ramp_app.command("resume")
def ramp_resume(ctx: typer.Context, reason: Reason) -> None:
    """Continue a paused ramp; the stage keeps the dwell time it had."""
    console.print(_carry_out(ctx, CommandKind.RESUME_RAMP, reason))


@ramp_app.command("abort")
def ramp_abort(ctx: typer.Context, reason: Reason) -> None:
    """End the ramp: the baseline serves everyone again."""
    console.print(_carry_out(ctx, CommandKind.ABORT_RAMP, reason))


@app.command()
def killswitch(
    ctx: typer.Context,
    state: Annotated[str, typer.Argument(help="on or off")],
    reason: Reason,
) -> None:
    """Answer every request from the spec's fallback (on), or from the models again (off)."""
    if state not in ("on", "off"):
        raise typer.BadParameter("state must be 'on' or 'off'")
    with _routing(ctx) as (_, store):
        current = store.kill_switch()
    if current.on == (state == "on"):
        since = f" since {current.at:%Y-%m-%d %H:%M:%S} by {current.by}" if current.at else ""
        raise refuse(f"the kill switch is already {state}{since}")
    kind = CommandKind.KILL_SWITCH_ON if state == "on" else CommandKind.KILL_SWITCH_OFF
    console.print(_carry_out(ctx, kind, reason))


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
