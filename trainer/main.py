"""``loopline run trainer``: the trainer as a process, until SIGTERM or SIGINT.

It exits with status 3 when its model version's lease is not its own: another
trainer holds it (so this one never starts), or took it over (so this one stops
without another checkpoint and a supervisor's restart waits for the lease).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from prometheus_client import start_http_server

from loopline.errors import LeaseError, LeaseHeld
from loopline.settings import Settings
from loopline.signing import require_safe
from trainer.core import Trainer

log = logging.getLogger(__name__)

LEASE_EXIT_STATUS = 3


def run(settings: Settings) -> None:
    """Train until asked to stop, then checkpoint and leave the group cleanly."""
    require_safe(settings, "trainer")
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    trainer = Trainer(settings)
    server = None
    if settings.metrics_port:
        server, _ = start_http_server(settings.metrics_port, registry=trainer.exporter.registry)
    try:
        try:
            trainer.start()
            while not stop.is_set():
                trainer.step()
        finally:
            trainer.close()
    except LeaseHeld as exc:
        log.error("not starting: %s", exc)
        raise SystemExit(LEASE_EXIT_STATUS) from None
    except LeaseError as exc:
        log.error("stopping without a checkpoint: %s", exc)
        raise SystemExit(LEASE_EXIT_STATUS) from None
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
