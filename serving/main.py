"""``loopline run serving``: the prediction service under uvicorn until SIGTERM or SIGINT.

uvicorn handles the signals: it stops accepting connections, lets requests in
flight finish, then the app's lifespan stops the routing follower and delivers the
logged predictions. With ``LOOPLINE_METRICS_PORT`` set, Prometheus metrics are served
on that port too (as every worker does), apart from the public HTTP port.
"""

from __future__ import annotations

import logging

import uvicorn
from prometheus_client import start_http_server

from loopline.settings import Settings
from loopline.signing import require_safe
from serving.app import build_service, create_app


def run(settings: Settings) -> None:
    require_safe(settings, "serving")
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    service = build_service(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=service.metrics.registry)
    app = create_app(service)
    uvicorn.run(
        app,
        host=settings.serving_host,
        port=settings.serving_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )
