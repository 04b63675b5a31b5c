"""The ``loopline`` command: local stack, topics, publishing, workers and operations."""

from __future__ import annotations

import importlib
import shlex
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from loopline.cli_settings import settings_of
from loopline.errors import LooplineError, RecordError
from loopline.settings import Settings

app = typer.Typer(help="Loopline: continuous training from Kafka to serving.", no_args_is_help=True)
dev_app = typer.Typer(
    help="The local stack: embedded Kafka-protocol broker and Redis.", no_args_is_help=True
)
topics_app = typer.Typer(help="Loopline's topics.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(topics_app, name="topics")
console = Console()
errors = Console(stderr=True)


class Worker(StrEnum):
    streams = "streams"
    trainer = "trainer"
    pusher = "pusher"
    serving = "serving"


@app.callback()
def _root(
    ctx: typer.Context,
    spec: Annotated[
        Path | None, typer.Option(help="Use-case spec file (default: LOOPLINE_SPEC).")
    ] = None,
) -> None:
    ctx.obj = Settings.from_env() if spec is None else Settings.from_env(spec=spec)


def _table(rows: dict[str, str] | dict[str, int], title: str) -> None:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)


@dev_app.command("up")
def dev_up(ctx: typer.Context) -> None:
    """Start the broker and Redis on loopback (if not running) and create the topics."""
    from loopline.devstack import LocalStack

    settings = settings_of(ctx)
    report = LocalStack(settings).up()
    # The local stack is development: its workers need the explicit mode to accept the
    # development keys, an open Redis and no serving token.
    env_file = settings.state_dir / "dev" / "env"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    values = settings.replace(env="dev").to_env()
    env_file.write_text(
        "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(values.items()))
    )
    report["workers"] = (
        f"development mode: `source {env_file}` (LOOPLINE_ENV=dev) before `loopline run` and the other commands"
    )
    _table(report, "local stack")


@dev_app.command("down")
def dev_down(ctx: typer.Context) -> None:
    """Stop what `dev up` started."""
    from loopline.devstack import LocalStack

    _table(LocalStack(settings_of(ctx)).down(), "local stack")


@dev_app.command("status")
def dev_status(ctx: typer.Context) -> None:
    """Say whether the broker and Redis answer."""
    from loopline.devstack import LocalStack

    _table(LocalStack(settings_of(ctx)).status(), "local stack")


@topics_app.command("create")
def topics_create(
    ctx: typer.Context,
    partitions: Annotated[int | None, typer.Option(min=1, help="Partitions per topic.")] = None,
) -> None:
    """Create every Loopline topic; topics that exist are left alone."""
    from loopline.kafka import create_topics

    _table(create_topics(settings_of(ctx), partitions), "topics")


@app.command()
def publish(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSONL, CSV or Parquet rows.")
    ],
    source: Annotated[str, typer.Option(help="Source recorded on each event.")] = "file",
) -> None:
    """Publish events and labels from a file through the Publisher (backfills, tests)."""
    from loopline.publisher import Publisher
    from loopline.rows import count_rows, read_rows

    settings = settings_of(ctx)
    events = labels = 0
    rejected: list[str] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Publisher(settings, source=source) as pub, Progress(*columns, console=errors) as progress:
        task = progress.add_task(f"publishing {file.name}", total=count_rows(file))
        rows = read_rows(file)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except RecordError as exc:
                rejected.append(str(exc))
                progress.advance(task)
                continue
            try:
                if row.features is None:
                    pub.label(row.event_id or "", row.entity_id, row.label or 0.0, row.ts)
                    labels += 1
                else:
                    pub.event(row.entity_id, row.features, row.ts, event_id=row.event_id)
                    events += 1
            except RecordError as exc:
                rejected.append(f"row {row.line}: {exc}")
            progress.advance(task)
    for line in rejected[:20]:
        errors.print(f"[red]rejected[/red] {line}")
    console.print(f"published {events} events and {labels} labels; rejected {len(rejected)}")
    if rejected:
        raise typer.Exit(1)


@app.command()
def run(
    ctx: typer.Context, worker: Annotated[Worker, typer.Argument(help="Which worker to run.")]
) -> None:
    """Run one worker in the foreground until interrupted."""
    try:
        module = importlib.import_module(f"{worker.value}.main")
    except ModuleNotFoundError as exc:
        if exc.name != f"{worker.value}.main":
            raise
        errors.print(
            f"[red]error:[/red] the {worker.value} worker is not part of this installation"
        )
        raise typer.Exit(2) from None
    module.run(settings_of(ctx))


@app.command("spec")
def spec_check(ctx: typer.Context) -> None:
    """Validate the spec and summarise it."""
    spec = settings_of(ctx).load_spec()
    rows = {
        "name": f"{spec.name} v{spec.spec_version}",
        "entity": spec.entity.name,
        "features": ", ".join(spec.all_feature_names),
        "label": f"{spec.label.kind}, horizon {spec.label.horizon_seconds:g}s, missing -> {spec.label.on_missing}",
        "model": spec.model.factory,
        "schema hash": spec.schema_hash,
    }
    _table(rows, str(settings_of(ctx).spec))


def _merge_operator_commands() -> None:
    from ops import (
        demo_commands,
        kafka_commands,
        keys_commands,
        serving_commands,
        status_commands,
        streams_commands,
        training_commands,
    )

    for module in (
        status_commands,
        training_commands,
        serving_commands,
        streams_commands,
        demo_commands,
        keys_commands,
        kafka_commands,
    ):
        if module.app.registered_commands or module.app.registered_groups:
            app.add_typer(module.app)


_merge_operator_commands()


def main() -> None:
    try:
        app()
    except LooplineError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None
