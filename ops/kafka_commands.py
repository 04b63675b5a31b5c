"""``loopline kafka acls``: which broker principal may do what, and creating those ACLs."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from loopline.cli_settings import settings_of
from loopline.kafka_acls import grants

app = typer.Typer()
kafka_app = typer.Typer(help="The broker's principals and their ACLs.", no_args_is_help=True)
acls_app = typer.Typer(help="Kafka ACLs of every Loopline principal.", invoke_without_command=True)
kafka_app.add_typer(acls_app, name="acls")
app.add_typer(kafka_app, name="kafka")
console = Console()


@acls_app.callback()
def acls_show(ctx: typer.Context) -> None:
    """Every ACL Loopline's principals need, for this deployment's topic prefix."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table(title="Kafka ACLs (allow, any host)")
    for column in ("principal", "resource", "name", "pattern", "operation"):
        table.add_column(column)
    for g in grants(settings_of(ctx)):
        table.add_row(g.principal, g.resource, g.name, g.pattern, g.operation)
    console.print(table)


@acls_app.command("apply")
def acls_apply(ctx: typer.Context) -> None:
    """Create those ACLs on the broker (idempotent); run as a super user, e.g. compose's admin."""
    from loopline.kafka_acls import apply

    settings = settings_of(ctx)
    console.print(f"{apply(settings)} ACLs in place on {settings.kafka_bootstrap}")
