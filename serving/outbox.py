"""What serving logs of each answer, produced without making a request wait for Kafka.

Two records per answer: the :class:`~loopline.contracts.Prediction` on ``predictions``
(online metrics join it with its label) and the served
:class:`~loopline.contracts.Event` on ``events``, encoded as the Publisher encodes
events (:func:`loopline.publisher.event_record`) and keyed by entity, so the app only
publishes the label later and the streams build the example from what serving used.

``produce`` only appends to librdkafka's buffer (batched by ``linger.ms``, idempotent,
``acks=all``); a background thread serves delivery reports. When the broker is away
long enough to fill the buffer, records are dropped and counted per topic rather than
slowing answers down; records the broker never acknowledged (``message.timeout.ms``
passed, a fatal producer error) are counted in
``loopline_serving_delivery_failures_total{topic}``. Neither ever fails a request.
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


class Outbox:
    def __init__(self, settings: Settings, failures: Counter | None = None) -> None:
        self.predictions_topic = settings.topic("predictions")
        self.events_topic = settings.topic("events")
        #: Counts delivery failures (serving passes its metric, labelled by topic here).
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
        self.dropped: dict[str, int] = {self.predictions_topic: 0, self.events_topic: 0}
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="serving-outbox", daemon=True)
        self._thread.start()

    def prediction(self, prediction: Prediction) -> bool:
        """Queue one prediction; False if it had to be dropped."""
        return self._produce(self.predictions_topic, prediction.entity_id, prediction.to_json())

    def event(self, entity_id: str, value: bytes) -> bool:
        """Queue one served event (already encoded); False if it had to be dropped."""
        return self._produce(self.events_topic, entity_id, value)

    def _produce(self, topic: str, key: str, value: bytes) -> bool:
        try:
            self._producer.produce(topic, value, key.encode())
        except (BufferError, KafkaException):
            self.dropped[topic] += 1
            return False
        return True

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if self._failures is not None:
                self._failures.labels(msg.topic() or "").inc()
            if self.failed == 1 or self.failed % 1000 == 0:
                log.error("%d served records failed delivery; latest: %s", self.failed, err.str())

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def close(self, timeout: float = 5.0) -> int:
        """Deliver what is queued; return how many records were left undelivered."""
        self._stop.set()
        self._thread.join(timeout=1)
        return int(self._producer.flush(timeout))
