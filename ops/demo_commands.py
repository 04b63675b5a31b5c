"""``loopline demo``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer()


@app.command()
def demo(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(min=5, help="How long the shop's traffic runs.")] = 150,
    rate: Annotated[
        float, typer.Option(min=1, help="Impressions per second (bots come on top).")
    ] = 100,
) -> None:
    """Run the whole loop on the local stack with the yarn shop's traffic."""
    from loopline.cli_settings import settings_of
    from ops.demo import run_demo

    run_demo(settings_of(ctx), seconds, rate, Console())
