"""The Publisher: how apps put events and, later, their labels on Kafka.

An app that asks serving publishes only labels: ``/predict`` publishes the event it
scored, encoded by :func:`event_record` as here. :meth:`Publisher.event` is for events
nobody scored (backfills, offline traffic)::

    with Publisher(settings) as pub:
        event_id = pub.event("user-42", {"price": 12.0, "hour": 9, "device": "mobile"})
        pub.label(event_id, "user-42", 1)

Records are validated against the spec before they leave the app (a bad one raises
:class:`~loopline.errors.RecordError` right there), keyed by entity so a label lands
on its event's partition, and produced idempotently with ``acks=all``. Buffering is
bounded: when the broker stops answering, ``event`` fails after
``publish_timeout_seconds`` instead of blocking forever.

No record is lost quietly. A record the broker does not acknowledge within
``publish_timeout_seconds`` becomes a :class:`FailedRecord` (topic, entity key, value,
``event_id`` — labels too — and the error) that the Publisher keeps until the app
takes it::

    try:
        pub.flush()
    except PublishError:
        failed = pub.take_failed()  # typed records, in the order they failed
        ...                         # later, once the broker is back:
        pub.resend(failed)

``flush()`` and ``close()`` (and leaving the ``with`` block) raise
:class:`~loopline.errors.PublishError` on every call while a failed record has not
been taken, naming how many and the first event ids; it is
:class:`~loopline.errors.BrokerUnavailable` when they timed out. ``on_error`` is told
about each failure as it happens (it receives the :class:`FailedRecord`; the record
stays kept until taken). A resent record keeps its ``event_id``, so a copy that did
reach the broker after all is dropped downstream as a duplicate. The Publisher keeps
at most ``publish_buffer_messages`` failed records; past that, publishing raises
until the app takes them.

Delivery reports are served by a background thread, the dedicated poll loop
librdkafka recommends, so failures surface within a fraction of a second even when
the app is idle, and the publishing path never polls. ``on_error`` runs on that
thread (or inside ``flush``): keep it short and do not call the Publisher from it.
After records timed out, or the broker fenced the producer, the next record goes
through a new Kafka producer (a new idempotent producer id), so resends can succeed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic
from types import TracebackType
from typing import Any, ParamSpec, Self

import orjson
from confluent_kafka import KafkaError, Message, Producer

from loopline.contracts import SCHEMA_VERSION, FeatureValue, Served
from loopline.errors import BrokerUnavailable, PublishError, Reason, RecordError
from loopline.kafka import producer_config
from loopline.settings import Settings
from loopline.spec import Spec
from loopline.validation import FeatureValidator

log = logging.getLogger(__name__)
P = ParamSpec("P")

# librdkafka's poll returns as soon as a report is queued; the interval only bounds
# how long stopping the thread takes.
_POLL_INTERVAL = 0.1
_SHOWN_IDS = 5
# librdkafka expires records in a scan once a second: a flush that waits a little past
# the publish timeout sees them reported, with their event ids, not still in flight.
_EXPIRY_GRACE = 1.5
# Errors after which the Publisher produces through a new producer instance (a new
# idempotent producer id). After fencing or a fatal error the old one delivers nothing
# more. After timeouts librdkafka must bump its epoch to go on, which a broker may
# answer by fencing it (the embedded one does): a new id is equivalent and works on all.
_RENEW_AFTER = {
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError._MSG_TIMED_OUT,
}


@dataclass(frozen=True, slots=True)
class FailedRecord:
    """A record the broker did not acknowledge, as it was produced: resend it unchanged."""

    topic: str
    key: str
    value: bytes
    event_id: str
    error: KafkaError

    @property
    def timed_out(self) -> bool:
        """True if the broker did not answer in time (rather than refusing the record)."""
        return self.error.code() == KafkaError._MSG_TIMED_OUT

    @classmethod
    def from_report(cls, err: KafkaError, msg: Message) -> FailedRecord:
        value = msg.value() or b""
        return cls(
            topic=msg.topic() or "",
            key=(msg.key() or b"").decode(),
            value=value,
            event_id=_event_id_of(value),
            error=err,
        )


ErrorCallback = Callable[[FailedRecord], None]


@dataclass
class PublisherStats:
    """Counters since the Publisher was created. ``delivered`` excludes what is in flight.

    ``failed`` counts every failed delivery; ``failed_kept`` those not taken yet.
    """

    sent: int = 0
    failed: int = 0
    in_flight: int = 0
    failed_kept: int = 0

    @property
    def delivered(self) -> int:
        return self.sent - self.failed - self.in_flight


def new_event_id() -> str:
    """128 random bits, hex: unique without coordination."""
    return os.urandom(16).hex()


def event_record(
    event_id: str,
    entity_id: str,
    ts: datetime,
    features: Mapping[str, FeatureValue],
    source: str = "",
    served: Served | None = None,
) -> bytes:
    """An event as it goes on ``events`` (the Publisher's and serving's, alike).

    ``features`` are the validated request features, without imputations (the streams
    impute, and record what they imputed). ``served`` is only for events serving
    scored; an event without it carries no ``served`` field at all.

    >>> ts = datetime(2026, 1, 1, tzinfo=UTC)
    >>> event_record("e1", "u1", ts, {"price": 3.0})
    b'{"event_id":"e1","entity_id":"u1","ts":"2026-01-01T00:00:00+00:00","features":{"price":3.0},"source":"","schema_version":1}'
    """
    record: dict[str, Any] = {
        "event_id": event_id,
        "entity_id": entity_id,
        "ts": ts,
        "features": features,
        "source": source,
        "schema_version": SCHEMA_VERSION,
    }
    if served is not None:
        record["served"] = served
    return orjson.dumps(record)


def _event_id_of(value: bytes) -> str:
    """The ``event_id`` of a value this module produced (events and labels both carry one)."""
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return ""
    event_id = record.get("event_id") if isinstance(record, dict) else None
    return event_id if isinstance(event_id, str) else ""


def _describe_failed(records: list[FailedRecord]) -> str:
    """How many records failed and which, for an error message.

    >>> err = KafkaError(KafkaError._MSG_TIMED_OUT)
    >>> rec = [FailedRecord("events", "u1", b"{}", f"e{i}", err) for i in range(7)]
    >>> _describe_failed(rec[:1])
    '1 record failed delivery (event id e0)'
    >>> _describe_failed(rec)
    '7 records failed delivery (event ids e0, e1, e2, e3, e4, ...)'
    """
    ids = ", ".join(r.event_id or "?" for r in records[:_SHOWN_IDS])
    if len(records) == 1:
        return f"1 record failed delivery (event id {ids})"
    more = ", ..." if len(records) > _SHOWN_IDS else ""
    return f"{len(records)} records failed delivery (event ids {ids}{more})"


def _weakly(method: Callable[P, None]) -> Callable[P, None]:
    """``method`` without a strong reference to its object.

    The producer holds its callbacks; were they bound to the Publisher, the delivery
    thread (which holds the producer) would keep a dropped Publisher alive for ever.
    """
    ref = weakref.WeakMethod(method)

    def call(*args: P.args, **kwargs: P.kwargs) -> None:
        target = ref()
        if target is not None:
            target(*args, **kwargs)

    return call


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
        on_error: ErrorCallback | None = None,
        **producer_overrides: Any,
    ) -> None:
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be callable, got {type(on_error).__name__}")
        self.settings = settings or Settings.from_env()
        self.spec = spec or self.settings.load_spec()
        self.source = source
        self._validator = FeatureValidator(self.spec)
        self._binary = self.spec.label.kind == "binary"
        self._events = self.settings.topic("events")
        self._labels = self.settings.topic("labels")
        self._on_error = on_error
        self._lock = threading.Lock()
        self._sent = self._failures = self._timeouts = 0
        self._failed: list[FailedRecord] = []
        self._keep_at_most = self.settings.publish_buffer_messages
        self._last_error: KafkaError | None = None
        self._timeout = self.settings.publish_timeout_seconds
        self._closed = False
        config = producer_config(self.settings, **producer_overrides)
        # Report failures only: a callback per delivered record would halve throughput.
        config |= {
            "delivery.report.only.error": True,
            "on_delivery": _weakly(self._delivery_failed),
            "error_cb": _weakly(self._client_error),
        }
        self._config = config
        self._producer = Producer(config)
        # Replaced producers, served until their last records are reported.
        self._retired: list[Producer] = []
        self._renew_for: KafkaError | None = None
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=Publisher._serve_reports,
            args=(weakref.ref(self), self._stop),
            name="loopline-publisher-delivery",
            daemon=True,
        )
        self._poller.start()

    # -- publishing ---------------------------------------------------------------

    def event(
        self,
        entity_id: str,
        features: Mapping[str, FeatureValue],
        ts: datetime | None = None,
        *,
        event_id: str | None = None,
    ) -> str:
        """Validate and publish one event nobody scored; return its ``event_id`` (for the label).

        For events serving answered, ``/predict`` publishes the event itself (with the
        online features it read): publish only their label. This is for the rest:
        backfills, offline traffic, decisions made without asking serving.
        """
        _check_id(entity_id, "entity_id")
        now = datetime.now(UTC)
        ts = _check_ts(ts, now)
        self._validator.check_time(ts, now)
        clean, _ = self._validator.validate(features)
        if event_id is None:
            event_id = new_event_id()
        else:
            _check_id(event_id, "event_id")
        value = event_record(event_id, entity_id, ts, clean, self.source)
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

    def resend(self, records: Iterable[FailedRecord]) -> None:
        """Publish taken records again, unchanged (same topic, key, value and ``event_id``).

        If this raises, the records it could not hand over are kept again, so
        ``take_failed()`` returns them with the rest.
        """
        pending = list(records)
        for i, record in enumerate(pending):
            try:
                self._produce(record.topic, record.key, record.value)
            except BaseException:
                with self._lock:
                    self._failed[:0] = pending[i:]
                raise

    def _produce(self, topic: str, key: str, value: bytes) -> None:
        if self._closed:
            raise PublishError("this Publisher is closed; publish through a new one")
        if self._renew_for is not None:
            self._renew_producer()
        if len(self._failed) >= self._keep_at_most:
            raise PublishError(
                f"{self._lost_message(self._kept())}; the Publisher keeps at most {self._keep_at_most} "
                "failed records and publishes nothing more until they are taken"
            )
        producer = self._producer
        try:
            producer.produce(topic, value, key.encode())
        except BufferError:
            self._wait_for_room()
            producer.produce(topic, value, key.encode())
        self._sent += 1

    def _wait_for_room(self) -> None:
        limit = self.settings.publish_buffer_messages
        deadline = monotonic() + self._timeout
        timeouts = self._timeouts
        while True:
            self._poll(0.05)
            # Records timing out free room, but the broker is evidently not answering.
            if self._timeouts != timeouts:
                break
            if len(self._producer) < limit:
                return
            if monotonic() >= deadline:
                break
        raise BrokerUnavailable(
            f"the buffer of {limit} records is full and the broker at {self.settings.kafka_bootstrap} "
            f"has not acknowledged them within {self._timeout:g}s ({self._describe_last_error()})"
        )

    # -- delivery -----------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record is acknowledged.

        Raises :class:`~loopline.errors.BrokerUnavailable` if time ran out or records
        timed out, :class:`~loopline.errors.PublishError` if the broker refused any; it
        raises again on every call until the failed records are taken with
        :meth:`take_failed`.
        """
        timeout = self._timeout + _EXPIRY_GRACE if timeout is None else timeout
        remaining = self._flush_all(timeout)
        failed = self._kept()
        if remaining:
            msg = (
                f"{remaining} record{'s' if remaining > 1 else ''} not acknowledged within {timeout:g}s by "
                f"{self.settings.kafka_bootstrap} ({self._describe_last_error()})"
            )
            if failed:
                msg += f"; besides, {self._lost_message(failed)}"
            raise BrokerUnavailable(msg)
        if not failed:
            return
        msg = self._lost_message(failed)
        if any(r.timed_out for r in failed):
            msg += (
                f"; the broker at {self.settings.kafka_bootstrap} did not acknowledge them "
                f"within {self._timeout:g}s ({self._describe_last_error()})"
            )
            raise BrokerUnavailable(msg)
        raise PublishError(msg)

    def take_failed(self) -> list[FailedRecord]:
        """Hand over every failed record, in the order they failed; the Publisher forgets them."""
        self._poll(0)  # reports already queued count too
        with self._lock:
            taken, self._failed = self._failed, []
        return taken

    @property
    def stats(self) -> PublisherStats:
        in_flight = len(self._producer) + sum(len(p) for p in self._retired)
        with self._lock:
            return PublisherStats(
                sent=self._sent,
                failed=self._failures,
                in_flight=in_flight,
                failed_kept=len(self._failed),
            )

    def _kept(self) -> list[FailedRecord]:
        with self._lock:
            return list(self._failed)

    @staticmethod
    def _lost_message(failed: list[FailedRecord]) -> str:
        first = failed[0]
        return (
            f"{_describe_failed(failed)}, kept until taken: call take_failed() and resend() "
            f"what it returns (first error, on {first.topic}: {first.error.str()})"
        )

    def _delivery_failed(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        record = FailedRecord.from_report(err, msg)
        if err.fatal() or err.code() in _RENEW_AFTER:
            self._renew_for = err
        with self._lock:
            first = not self._failed
            self._failed.append(record)
            self._failures += 1
            self._timeouts += record.timed_out
        if first:
            log.warning(
                "records are failing delivery and are kept until taken; first: event %s on %s: %s",
                record.event_id,
                record.topic,
                err.str(),
            )
        if self._on_error is not None:
            try:
                self._on_error(record)
            except Exception:
                # The record stays kept; a broken callback must not stop delivery reports.
                log.exception("on_error raised for event %s; the record is kept", record.event_id)

    def _client_error(self, err: KafkaError) -> None:
        self._last_error = err
        if err.fatal():
            self._renew_for = err

    def _renew_producer(self) -> None:
        with self._lock:
            err, self._renew_for = self._renew_for, None
            if err is None:  # another thread renewed it
                return
            self._retired.append(self._producer)
            self._producer = Producer(self._config)
        log.info("producing through a new Kafka producer after: %s", err.str())

    def _poll(self, timeout: float) -> None:
        _poll_all(self._serving(), timeout)

    def _serving(self) -> list[Producer]:
        """The producers whose reports are still due, the current one last."""
        for old in list(self._retired):
            if not len(old):
                with contextlib.suppress(ValueError):  # the other thread removed it
                    self._retired.remove(old)
        return [*self._retired, self._producer]

    def _flush_all(self, timeout: float) -> int:
        deadline = monotonic() + timeout
        remaining = 0
        for producer in [*self._retired, self._producer]:
            remaining += producer.flush(max(0.0, deadline - monotonic()))
        self._poll(0)
        return remaining

    def _describe_last_error(self) -> str:
        err = self._last_error
        return f"last client error: {err.str()}" if err is not None else "no client error reported"

    @staticmethod
    def _serve_reports(ref: weakref.ReferenceType[Publisher], stop: threading.Event) -> None:
        # Holds the Publisher only between polls: one dropped without close() is
        # freed, and this ends.
        while not stop.is_set():
            pub = ref()
            if pub is None:
                return
            producers = pub._serving()
            del pub
            try:
                _poll_all(producers, _POLL_INTERVAL)
            except Exception:
                log.exception("serving delivery reports failed")
                stop.wait(_POLL_INTERVAL)
            del producers

    # -- lifecycle ----------------------------------------------------------------

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # may run at interpreter exit
            self._stop.set()
            if failed := self._kept():
                log.error("a Publisher was dropped without close(): %s", self._lost_message(failed))

    def close(self, timeout: float | None = None) -> None:
        """Flush (raising as :meth:`flush` does) and stop publishing; failed records stay takeable."""
        try:
            self.flush(timeout)
        finally:
            self._shut_down()

    def _shut_down(self) -> None:
        self._closed = True
        self._stop.set()
        if threading.current_thread() is not self._poller:
            self._poller.join(timeout=5 * _POLL_INTERVAL + 1)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # Already failing: try to deliver what we have, but do not mask the error.
        try:
            self._flush_all(min(self._timeout, 5.0))
        finally:
            self._shut_down()
        if failed := self._kept():
            log.error("leaving the Publisher on an error: %s", self._lost_message(failed))


def _poll_all(producers: list[Producer], timeout: float) -> None:
    *retired, current = producers
    for old in retired:
        old.poll(0)
    current.poll(timeout)
