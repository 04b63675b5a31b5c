"""Operator commands for the streams side of the loop; merged into the ``loopline`` command."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from loopline import accounting
from loopline.cli_settings import settings_of

app = typer.Typer()
console = Console()


@app.command("accounting")
def show_accounting(ctx: typer.Context) -> None:
    """Where every event and label read by the streams ended up, and whether the books balance."""
    from loopline.kafka import topic_sizes

    settings = settings_of(ctx)
    books = accounting.read(settings)
    published = topic_sizes(settings, ("events", "labels"))
    table = Table(title=f"streams accounting ({books.partitions} partitions)")
    table.add_column("counter")
    table.add_column("count", justify="right")
    table.add_row("events published", str(published.get("events", 0)))
    table.add_row("events read", str(books.get("events")))
    for name in accounting.EVENT_OUTCOMES:
        table.add_row(f"  {name}", str(books.get(name)))
    table.add_row("  not yet read", str(published.get("events", 0) - books.get("events")))
    table.add_row("labels published", str(published.get("labels", 0)))
    table.add_row("labels read", str(books.get("labels")))
    for name in (*accounting.LABEL_OUTCOMES, *accounting.DETAILS):
        table.add_row(f"  {name}", str(books.get(name)))
    for reason, count in books.rejected.items():
        table.add_row(f"rejected {reason}", str(count))
    console.print(table)
    balanced = books.events_balance == 0 and books.labels_balance == 0
    problems = books.problems(published.get("events", 0))
    unread = published.get("events", 0) - books.get("events")
    if not balanced:
        console.print(
            f"[red]books do not balance[/red]: events {books.events_balance:+d}, labels {books.labels_balance:+d}"
        )
    elif unread > 0:
        console.print(f"books balance for what was read; {unread} events not yet read")
    else:
        console.print("books balance")
    for problem in problems:
        console.print(f"[red]{problem}[/red]")
    if not balanced or problems:
        raise typer.Exit(1)
