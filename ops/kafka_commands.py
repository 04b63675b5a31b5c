"""``loopline kafka acls``: which broker principal may do what, and creating those ACLs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loopline.cli_settings import settings_of
from loopline.kafka_acls import grants

app = typer.Typer()
kafka_app = typer.Typer(help="The broker's principals and their ACLs.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
console = Console()


@kafka_app.command("acls")
def acls(
    ctx: typer.Context,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Create them on the broker (idempotent); run as a super user, e.g. compose's admin.",
        ),
    ] = False,
) -> None:
    """Every ACL Loopline's principals need, for this deployment's topic prefix."""
    settings = settings_of(ctx)
    table = Table(title="Kafka ACLs (allow, any host)")
    for column in ("principal", "resource", "name", "pattern", "operation"):
        table.add_column(column)
    for g in grants(settings):
        table.add_row(g.principal, g.resource, g.name, g.pattern, g.operation)
    console.print(table)
    if apply:
        from loopline.kafka_acls import apply as create

        console.print(f"{create(settings)} ACLs in place on {settings.kafka_bootstrap}")
