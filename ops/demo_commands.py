"""``loopline demo``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer()


@app.command()
def demo(
    ctx: typer.Context,
    rate: Annotated[
        float, typer.Option(min=10, help="Impressions per second (bots come on top).")
    ] = 100,
    dwell: Annotated[
        float, typer.Option(min=1, help="Seconds each stage of the v2 ramp dwells.")
    ] = 10,
) -> None:
    """Run the whole loop on the local stack with the yarn shop's traffic, narrated."""
    from loopline.cli_settings import settings_of
    from ops.demo import Plan, run_demo

    run_demo(settings_of(ctx), Console(), Plan(rate=rate, dwell_seconds=dwell))
