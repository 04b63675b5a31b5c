"""``loopline run serving``: the prediction service under uvicorn until SIGTERM or SIGINT.

uvicorn handles the signals: it stops accepting connections, lets requests in
flight finish, then the app's lifespan stops the routing follower and delivers the
logged predictions.
"""

from __future__ import annotations

import logging

import uvicorn

from loopline.settings import Settings
from loopline.signing import require_safe
from serving.app import build_service, create_app


def run(settings: Settings) -> None:
    require_safe(settings, "serving")
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(build_service(settings))
    uvicorn.run(
        app,
        host=settings.serving_host,
        port=settings.serving_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )
