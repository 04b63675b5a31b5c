"""Operator commands for the streams side of the loop; merged into the ``loopline`` command."""

from __future__ import annotations

import typer

app = typer.Typer()
