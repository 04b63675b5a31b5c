"""Operator commands for the training side of the loop; merged into the ``loopline`` command.

Each command puts one :class:`~loopline.contracts.Command` on ``control``; every
trainer in scope (``--model``, all by default) acts on it, now or when it next starts.
``loopline checkpoints`` reads the checkpoint store directly.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loopline.checkpoints import CheckpointStore, verify
from loopline.cli_settings import settings_of
from loopline.contracts import Command, CommandKind, Window, parse_ts
from loopline.control import ALL_SCOPES, make_command, send
from loopline.errors import CheckpointError, RecordError

app = typer.Typer()
console = Console()

Model = Annotated[str, typer.Option("--model", help="Model (spec name) in scope; all by default.")]
Reason = Annotated[str, typer.Option(help="Why; recorded with the command.")]
Start = Annotated[str, typer.Option(help="Window start, RFC 3339 with offset (inclusive).")]
End = Annotated[str, typer.Option(help="Window end, RFC 3339 with offset (exclusive).")]


def _sent(command: Command) -> None:
    console.print(f"sent {command.kind.value} to {command.scope} (command {command.command_id})")


def _window(start: str, end: str) -> dict[str, str]:
    try:
        window = Window(parse_ts(start, "--start"), parse_ts(end, "--end"))
    except (RecordError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    return {"start": window.start.isoformat(), "end": window.end.isoformat()}


@app.command()
def pause(ctx: typer.Context, model: Model = ALL_SCOPES, reason: Reason = "") -> None:
    """Stop learning; trainers keep their position and their place in the group."""
    _sent(send(settings_of(ctx), make_command(CommandKind.PAUSE, model, reason=reason)))


@app.command()
def resume(ctx: typer.Context, model: Model = ALL_SCOPES, reason: Reason = "") -> None:
    """Resume learning where it paused."""
    _sent(send(settings_of(ctx), make_command(CommandKind.RESUME, model, reason=reason)))


@app.command("mark-anomalous")
def mark_anomalous(
    ctx: typer.Context, start: Start, end: End, model: Model = ALL_SCOPES, reason: Reason = ""
) -> None:
    """Never learn examples whose event time is in [start, end), also on replay."""
    args = _window(start, end)
    command = make_command(CommandKind.MARK_ANOMALOUS, model, reason=reason, args=args)
    _sent(send(settings_of(ctx), command))


@app.command("clear-anomalous")
def clear_anomalous(
    ctx: typer.Context, start: Start, end: End, model: Model = ALL_SCOPES, reason: Reason = ""
) -> None:
    """Learn [start, end) again from now on (what was skipped stays skipped until a replay)."""
    args = _window(start, end)
    command = make_command(CommandKind.CLEAR_ANOMALOUS, model, reason=reason, args=args)
    _sent(send(settings_of(ctx), command))


@app.command()
def replay(
    ctx: typer.Context,
    from_checkpoint: Annotated[
        str, typer.Option("--from", help="Checkpoint id to retrain from (see `checkpoints`).")
    ],
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model in scope; default: the checkpoint's model."),
    ] = None,
    reason: Reason = "",
) -> None:
    """Retrain from an earlier checkpoint up to now, as a new lineage, skipping excluded windows.

    The way to undo an anomalous stretch learned before it was marked.
    """
    settings = settings_of(ctx)
    store = CheckpointStore(
        settings.checkpoint_dir, settings.signing_key.get_secret_value().encode()
    )
    try:
        manifest = store.manifest(from_checkpoint)
    except CheckpointError:
        manifest = None
    scope = model or (manifest.model_name if manifest else ALL_SCOPES)
    command = make_command(CommandKind.REPLAY, scope, reason=reason, args={"from": from_checkpoint})
    _sent(send(settings, command))
    console.print(f"the new lineage will be replay-{command.command_id}")


@app.command()
def checkpoints(ctx: typer.Context, model: Model = ALL_SCOPES) -> None:
    """List checkpoints, newest first, with lineage, offsets and whether they verify."""
    settings = settings_of(ctx)
    key = settings.signing_key.get_secret_value().encode()
    store = CheckpointStore(settings.checkpoint_dir, key)
    table = Table(title=str(settings.checkpoint_dir))
    table.add_column("id", no_wrap=True)
    for column in (
        "model",
        "lineage",
        "parent",
        "created",
        "seen",
        "excluded",
        "offsets",
        "metrics",
        "verified",
    ):
        table.add_column(column)
    for manifest in store.manifests(None if model == ALL_SCOPES else model):
        blob = settings.checkpoint_dir / f"{manifest.checkpoint_id}.model"
        try:
            verify(manifest, blob.read_bytes() if blob.exists() else b"", key)
            verified = "yes"
        except CheckpointError as exc:
            verified = f"NO: {exc}"
        metrics = ", ".join(
            f"{k}={v:.4g}"
            for k, v in manifest.metrics.items()
            if v is not None and "@" not in k and not k.startswith("examples_")
        )
        table.add_row(
            manifest.checkpoint_id,
            manifest.model_name,
            manifest.lineage,
            manifest.parent_id or "-",
            manifest.created_at.isoformat(timespec="seconds"),
            str(manifest.examples_seen),
            str(manifest.examples_excluded),
            " ".join(f"{p}:{o}" for p, o in manifest.offsets.items()),
            metrics,
            verified,
        )
    console.print(table)
