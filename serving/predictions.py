"""Logs every answer to ``predictions`` without making a request wait for Kafka.

``produce`` only appends to librdkafka's buffer (batched by ``linger.ms``); a
background thread serves delivery reports. When the broker is away long enough to
fill the buffer, records are dropped and counted rather than slowing answers down;
records the broker never acknowledged (``message.timeout.ms`` passed, a fatal
producer error) are counted in ``loopline_serving_delivery_failures_total``.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter

from loopline.contracts import Prediction
from loopline.kafka import producer_config
from loopline.settings import Settings

log = logging.getLogger(__name__)


class PredictionLog:
    def __init__(self, settings: Settings, failures: Counter | None = None) -> None:
        self._topic = settings.topic("predictions")
        #: Counts delivery failures (serving passes its metric, labelled by topic).
        self._failures = failures
        config = producer_config(
            settings,
            **{
                "linger.ms": 20,
                "queue.buffering.max.messages": 100_000,
                "delivery.report.only.error": True,
                "on_delivery": self._delivered,
            },
        )
        self._producer = Producer(config)
        self.dropped = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="prediction-log", daemon=True)
        self._thread.start()

    def log(self, prediction: Prediction) -> bool:
        """Queue one prediction; False if it had to be dropped."""
        try:
            self._producer.produce(self._topic, prediction.to_json(), prediction.entity_id.encode())
        except (BufferError, KafkaException):
            self.dropped += 1
            return False
        return True

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if self._failures is not None:
                self._failures.inc()
            if self.failed == 1 or self.failed % 1000 == 0:
                log.error("%d predictions failed delivery; latest: %s", self.failed, err.str())

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def close(self, timeout: float = 5.0) -> int:
        """Deliver what is queued; return how many records were left undelivered."""
        self._stop.set()
        self._thread.join(timeout=1)
        return int(self._producer.flush(timeout))
