"""``loopline run streams``: one streams worker, until SIGTERM or SIGINT."""

from __future__ import annotations

import contextlib

import faust
from prometheus_client import start_http_server

from loopline.settings import Settings
from loopline.signing import require_safe
from streams.topology import build_app


def run(settings: Settings) -> None:
    require_safe(settings, "streams")
    app = build_app(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    worker = faust.Worker(app, loglevel=settings.log_level.lower())
    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()
