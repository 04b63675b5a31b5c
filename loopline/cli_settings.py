"""The settings a ``loopline`` command runs with, for commands defined outside ``loopline.cli``."""

from __future__ import annotations

import typer

from loopline.settings import Settings


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root command read once from the environment (and ``--spec``)."""
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):
        raise RuntimeError("loopline commands must run under the root `loopline` command")
    return settings
