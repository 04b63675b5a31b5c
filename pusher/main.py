"""``loopline run pusher``: qualify checkpoints, push them, drive ramps, until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import redis
from confluent_kafka import KafkaException
from prometheus_client import start_http_server

from loopline.errors import BrokerUnavailable
from loopline.routing import RoutingContention
from loopline.settings import Settings
from loopline.signing import require_safe
from pusher.worker import Pusher

log = logging.getLogger(__name__)


def run(settings: Settings) -> None:
    require_safe(settings, "pusher")
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pusher = Pusher(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=pusher.registry)
    run_until(pusher, stop)


def run_until(pusher: Pusher, stop: threading.Event, max_backoff: float = 30.0) -> None:
    """Run the pusher's loop until ``stop``, starting it over after an outage."""
    backoff = 1.0
    while not stop.is_set():
        try:
            pusher.run(stop)
        except (
            redis.RedisError,
            RoutingContention,
            KafkaException,
            BrokerUnavailable,
            OSError,
        ) as exc:
            # Start over from the committed offsets and the state in Redis: a checkpoint
            # being judged or a Command being applied when the outage hit is taken up
            # again, none is skipped.
            log.error("pusher loop failed (%s); restarting in %.0fs", exc, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, max_backoff)
        else:
            backoff = 1.0
