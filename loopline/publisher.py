"""The Publisher: how apps put events and, later, their labels on Kafka::

    with Publisher(settings) as pub:
        event_id = pub.event("user-42", {"price": 12.0, "hour": 9, "device": "mobile"})
        pub.label(event_id, "user-42", 1)

Records are validated against the spec before they leave the app (a bad one raises
:class:`~loopline.errors.RecordError` right there), keyed by entity so a label lands
on its event's partition, and produced idempotently with ``acks=all``. Buffering is
bounded: when the broker stops answering, ``event`` fails after
``publish_timeout_seconds`` instead of blocking forever, and ``flush`` raises if any
record was not acknowledged.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic
from types import TracebackType
from typing import Any, Self

import orjson
from confluent_kafka import KafkaError, Message, Producer

from loopline.contracts import SCHEMA_VERSION, FeatureValue
from loopline.errors import BrokerUnavailable, PublishError, Reason, RecordError
from loopline.kafka import producer_config
from loopline.settings import Settings
from loopline.spec import Spec
from loopline.validation import FeatureValidator

DeliveryErrorCallback = Callable[[bytes | None, KafkaError], None]
_POLL_EVERY = 1000


@dataclass
class PublisherStats:
    """Counters since the Publisher was created. ``delivered`` excludes what is in flight."""

    sent: int = 0
    failed: int = 0
    in_flight: int = 0

    @property
    def delivered(self) -> int:
        return self.sent - self.failed - self.in_flight


def new_event_id() -> str:
    """128 random bits, hex: unique without coordination."""
    return os.urandom(16).hex()


def _check_ts(ts: datetime | None, now: datetime) -> datetime:
    if ts is None:
        return now
    if ts.tzinfo is None:
        raise RecordError(Reason.WRONG_TYPE, "ts must be timezone-aware (use datetime.now(UTC))")
    return ts


def _check_id(value: str, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise RecordError(
            Reason.MISSING_FIELD if not value else Reason.WRONG_TYPE,
            f"{name} must be a non-empty string",
        )


class Publisher:
    """Publishes events and labels for one use case; one per process is enough."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        spec: Spec | None = None,
        source: str = "",
        on_delivery_error: DeliveryErrorCallback | None = None,
        **producer_overrides: Any,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.spec = spec or self.settings.load_spec()
        self.source = source
        self._validator = FeatureValidator(self.spec)
        self._binary = self.spec.label.kind == "binary"
        self._events = self.settings.topic("events")
        self._labels = self.settings.topic("labels")
        self._on_delivery_error = on_delivery_error
        self._lock = threading.Lock()
        self._sent = self._failed = 0
        self._first_failure: str | None = None
        self._timed_out = False
        self._last_error: KafkaError | None = None
        self._timeout = self.settings.publish_timeout_seconds
        config = producer_config(self.settings, **producer_overrides)
        # Report failures only: a callback per delivered record would halve throughput.
        config |= {
            "delivery.report.only.error": True,
            "on_delivery": self._delivery_failed,
            "error_cb": self._client_error,
        }
        self._producer = Producer(config)

    # -- publishing ---------------------------------------------------------------

    def event(
        self,
        entity_id: str,
        features: Mapping[str, FeatureValue],
        ts: datetime | None = None,
        *,
        event_id: str | None = None,
    ) -> str:
        """Validate and publish one event; return its ``event_id`` (for the label)."""
        _check_id(entity_id, "entity_id")
        now = datetime.now(UTC)
        ts = _check_ts(ts, now)
        self._validator.check_time(ts, now)
        clean, _ = self._validator.validate(features)
        if event_id is None:
            event_id = new_event_id()
        else:
            _check_id(event_id, "event_id")
        value = orjson.dumps(
            {
                "event_id": event_id,
                "entity_id": entity_id,
                "ts": ts,
                "features": clean,
                "source": self.source,
                "schema_version": SCHEMA_VERSION,
            }
        )
        self._produce(self._events, entity_id, value)
        return event_id

    def label(
        self, event_id: str, entity_id: str, value: float | bool, ts: datetime | None = None
    ) -> None:
        """Publish the outcome of an earlier event (same ``entity_id`` as the event)."""
        _check_id(event_id, "event_id")
        _check_id(entity_id, "entity_id")
        ts = _check_ts(ts, datetime.now(UTC))
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, int | float):
            raise RecordError(
                Reason.WRONG_TYPE, f"label must be a number, got {type(value).__name__}"
            )
        if not math.isfinite(value) or (self._binary and value not in (0, 1)):
            raise RecordError(
                Reason.OUT_OF_RANGE,
                f"label {value!r} is not valid for a {self.spec.label.kind} label",
            )
        record = {
            "event_id": event_id,
            "entity_id": entity_id,
            "ts": ts,
            "label": value,
            "schema_version": SCHEMA_VERSION,
        }
        self._produce(self._labels, entity_id, orjson.dumps(record))

    def _produce(self, topic: str, key: str, value: bytes) -> None:
        producer = self._producer
        try:
            producer.produce(topic, value, key.encode())
        except BufferError:
            self._wait_for_room()
            producer.produce(topic, value, key.encode())
        self._sent += 1
        if self._sent % _POLL_EVERY == 0:
            producer.poll(0)

    def _wait_for_room(self) -> None:
        limit = self.settings.publish_buffer_messages
        deadline = monotonic() + self._timeout
        while monotonic() < deadline and not self._timed_out:
            self._producer.poll(0.05)
            if len(self._producer) < limit and not self._timed_out:
                return
        raise BrokerUnavailable(
            f"the buffer of {limit} records is full and the broker at {self.settings.kafka_bootstrap} "
            f"has not acknowledged them within {self._timeout:g}s ({self._describe_last_error()})"
        )

    # -- delivery -----------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record is acknowledged; raise if any failed or time ran out."""
        timeout = self._timeout if timeout is None else timeout
        remaining = self._producer.flush(timeout)
        if remaining:
            raise BrokerUnavailable(
                f"{remaining} records not acknowledged within {timeout:g}s by "
                f"{self.settings.kafka_bootstrap} ({self._describe_last_error()})"
            )
        with self._lock:
            failed, first, self._first_failure = self._failed, self._first_failure, None
            timed_out, self._timed_out = self._timed_out, False
        if first is None:
            return
        msg = f"{failed} records failed delivery so far; first: {first}"
        if timed_out:
            msg += f"; the broker at {self.settings.kafka_bootstrap} did not acknowledge them ({self._describe_last_error()})"
            raise BrokerUnavailable(msg)
        raise PublishError(msg)

    @property
    def stats(self) -> PublisherStats:
        in_flight = len(self._producer)
        with self._lock:
            return PublisherStats(sent=self._sent, failed=self._failed, in_flight=in_flight)

    def _delivery_failed(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        with self._lock:
            self._failed += 1
            if self._first_failure is None:
                self._first_failure = f"{msg.topic()}: {err.str()}"
            self._timed_out |= err.code() == KafkaError._MSG_TIMED_OUT
        if self._on_delivery_error is not None:
            self._on_delivery_error(msg.key(), err)

    def _client_error(self, err: KafkaError) -> None:
        self._last_error = err

    def _describe_last_error(self) -> str:
        err = self._last_error
        return f"last client error: {err.str()}" if err is not None else "no client error reported"

    # -- lifecycle ----------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()
        else:
            # Already failing: try to deliver what we have, but do not mask the error.
            self._producer.flush(min(self._timeout, 5.0))
