"""The prediction service: ``POST /predict``, ``GET /healthz``, ``/livez``, ``GET /metrics``.

``/predict`` validates and imputes the request features, merges the entity's online
features, asks the model the routing table assigns to the entity (sticky by
``entity_id``) and logs the answer to ``predictions``. It also publishes the event it
scored on ``events`` (:mod:`serving.outbox`): the request features, the online
features as it read them and when, and the version that scored it, under the event
id it returns. The app then publishes only the label, by that id, and the streams
build the example from exactly what serving used. A request may name its own
``event_id``: a retry with the same id logs the same event again, which the streams
drop as a duplicate, so the example carries the first answer's features. ``"log":
false`` answers without publishing an event (probes); so does every request with
``LOOPLINE_SERVING_LOG_EVENTS=false``. Any answer it cannot get from a
model comes from the spec's fallback, with ``fallback: true`` and a reason (a model
that keeps exceeding the spec's per-prediction budget is skipped for a while, see
:mod:`serving.breaker`); bad input
gets a 4xx naming what was wrong; nothing turns into a 500. A body over 64 KiB is
refused (413) before it is read (:func:`serving.request.read_body`), and a request
answered without reading its body (401, 413) closes its connection, so the rest of
the body is never taken in.

A request never waits on Redis on the event loop: the online-feature read (and the
scoring with it) runs in a worker thread, so a slow Redis slows only the requests that
read it, each bounded by ``LOOPLINE_SERVING_REDIS_TIMEOUT_SECONDS``. The probes and
``/metrics`` read only what the routing follower's thread last saw.

Probes. ``/healthz`` (also ``/readyz``) is readiness: 200 only while this instance
serves what the routing table says; otherwise 503, with the machine-readable
``reasons``: ``redis_unreachable``, ``routing_stale`` (the table was not read for
``STALE_AFTER_SECONDS``), ``checkpoints_refused`` (a route's checkpoint did not
verify, so an older table or the fallback serves its share), ``no_model`` (only the
fallback answers). A kill switch is an operator's order, not a fault: it stays 200.
``/livez`` is liveness: 200 while the routing follower's loop turns, 503 if it died or
hung; restart on that one, route traffic away on the other.

With ``LOOPLINE_SERVING_TOKEN`` set, ``/predict`` and the HTTP port's ``/metrics`` need
``Authorization: Bearer <token>``, and ``/healthz`` answers a caller without it only
``status`` and ``reasons`` (the routing table, checkpoint ids and why a checkpoint was
refused are for the token's holders). Prometheus scrapes the metrics port,
``LOOPLINE_METRICS_PORT``, as it does the other workers.
"""

from __future__ import annotations

import gc
import hmac
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
import redis
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from feature_repo.online import OnlineFeatures
from loopline.checkpoints import CheckpointStore
from loopline.contracts import FeatureValue, Prediction, Served, utcnow
from loopline.errors import RecordError
from loopline.heartbeat import Heartbeat
from loopline.publisher import event_record, new_event_id
from loopline.routing import RoutingStore
from loopline.scoring import score
from loopline.settings import Settings
from loopline.signing import public_key
from loopline.spec import Spec
from loopline.validation import FeatureValidator
from serving.breaker import LatencyBreaker
from serving.fallback import FALLBACK_VERSION, Fallback, FallbackReason
from serving.follower import RoutingFollower
from serving.metrics import ServingMetrics
from serving.models import ModelCache
from serving.outbox import Outbox
from serving.request import BadRequest, parse, read_body

log = logging.getLogger(__name__)

#: Readiness fails once the routing table was not read from Redis for this long.
STALE_AFTER_SECONDS = 10.0
#: Liveness fails once the routing follower finished no round for this long (a model
#: load happens inside a round).
LIVE_WITHIN_SECONDS = 120.0
#: Sent with an answer given before the body was read: the rest is never taken in.
CLOSE = {"Connection": "close"}
#: The ``source`` of the events serving publishes.
SOURCE = "serving"


class FeatureReader(Protocol):
    def read(self, entity_ids: list[str]) -> list[dict[str, FeatureValue]]: ...

    def close(self) -> None: ...


def _json(
    body: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status_code, headers, media_type="application/json")


@dataclass(frozen=True, slots=True)
class Scored:
    """One answer and what it was computed from.

    ``entity`` is the entity's online features as read at ``read_at``, or None when
    the answer did not read them (kill switch, Redis away, a model skipped for latency).
    """

    score: float
    version: str
    reason: FallbackReason | None = None
    entity: dict[str, FeatureValue] | None = None
    read_at: datetime | None = None

    @property
    def scored_by(self) -> str:
        """What produced the score: the model's version, or the fallback's."""
        return FALLBACK_VERSION if self.reason is not None else self.version


@dataclass
class Service:
    """Everything a request needs, built once per process."""

    settings: Settings
    spec: Spec
    online: FeatureReader
    follower: RoutingFollower
    outbox: Outbox
    metrics: ServingMetrics

    def __post_init__(self) -> None:
        self.validator = FeatureValidator(self.spec)
        self.fallback = Fallback(self.spec)
        self.kind = self.spec.label.kind
        self.breaker = LatencyBreaker(self.spec.qualification.max_latency_ms / 1000)
        self.failing: set[str] = set()
        token = self.settings.serving_token
        self.token = None if token is None else f"Bearer {token.get_secret_value()}".encode()
        self.metrics.registry.before_scrape = self.observe

    def authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, self.token)

    def observe(self) -> None:
        """Set the gauges that describe this instance, for the scrape about to happen."""
        snap, metrics = self.follower.current, self.metrics
        metrics.routing_version.set(snap.table.version)
        shares = {r.checkpoint_id: r.percent for r in snap.table.routes}
        metrics.serving(shares, self.follower.created())
        metrics.refused.set(len(self.follower.refused))
        metrics.dropped.set(self.outbox.dropped[self.outbox.predictions_topic])
        metrics.events_dropped.set(self.outbox.dropped[self.outbox.events_topic])
        metrics.ready.set(0 if readiness(self)[0] else 1)

    def predict(self, entity_id: str, features: dict[str, FeatureValue]) -> Scored:
        """Score one request."""
        snap = self.follower.current
        fallback = self.fallback.score
        if snap.kill.on:
            return Scored(fallback(features), FALLBACK_VERSION, FallbackReason.KILL_SWITCH)
        if not snap.redis_ok:
            return Scored(fallback(features), FALLBACK_VERSION, FallbackReason.REDIS)
        version = snap.table.pick(entity_id)
        if version is None:
            return Scored(fallback(features), FALLBACK_VERSION, FallbackReason.NO_MODEL)
        if self.breaker.is_open(version):
            return Scored(fallback(features), version, FallbackReason.LATENCY)
        try:
            read_at = utcnow()
            entity = self.online.read([entity_id])[0]
        except (redis.RedisError, OSError) as exc:
            log.warning("online features unavailable: %s", exc)
            return Scored(fallback(features), FALLBACK_VERSION, FallbackReason.REDIS)
        started = time.perf_counter()
        try:
            value = score(snap.models[version], {**entity, **features}, self.kind)
        except Exception:
            if version not in self.failing:  # once per version, not once per request
                self.failing.add(version)
                log.exception("model %s failed; answering from the fallback", version)
            reason = FallbackReason.MODEL_ERROR
            return Scored(fallback(features), version, reason, entity, read_at)
        self.breaker.record(version, time.perf_counter() - started)
        if not math.isfinite(value):
            reason = FallbackReason.MODEL_ERROR
            return Scored(fallback(features), version, reason, entity, read_at)
        return Scored(value, version, None, entity, read_at)

    def log_event(
        self,
        event_id: str,
        entity_id: str,
        ts: datetime,
        request: dict[str, FeatureValue],
        scored: Scored,
    ) -> None:
        """Publish the event this answer scored (never blocking, never raising)."""
        served = Served(scored.entity, scored.read_at, (scored.scored_by,))
        try:
            value = event_record(event_id, entity_id, ts, request, SOURCE, served)
        except Exception:  # whatever went wrong, the answer still goes out
            log.exception("event %s could not be encoded; not logged", event_id)
            self.outbox.dropped[self.outbox.events_topic] += 1
            return
        self.outbox.event(entity_id, value)


def build_service(settings: Settings, spec: Spec | None = None) -> Service:
    spec = spec or settings.load_spec()
    # Serving's Redis calls give up quickly and do not retry: a slow Redis must turn
    # into a fallback answer, not a slow one.
    fast = settings.replace(
        redis_timeout_seconds=settings.serving_redis_timeout_seconds, redis_retries=0
    )
    store = CheckpointStore.of(settings)
    routing = RoutingStore(fast)
    heartbeat = Heartbeat(fast, f"serving.{os.uname().nodename}-{settings.serving_port}")
    cache = ModelCache(store, spec.schema_hash, routing.verdict, public_key(settings, "pusher"))
    follower = RoutingFollower(routing, cache, heartbeat=heartbeat)
    metrics = ServingMetrics(always=(FALLBACK_VERSION,))
    return Service(
        settings=settings,
        spec=spec,
        online=OnlineFeatures(fast, spec),
        follower=follower,
        outbox=Outbox(settings, metrics.delivery_failures),
        metrics=metrics,
    )


def readiness(service: Service) -> tuple[list[str], dict[str, Any]]:
    """Why this instance does not serve what routing says (empty: it does), and the view."""
    follower = service.follower
    snap, refused = follower.current, follower.refused
    reasons = []
    if not snap.redis_ok:
        reasons.append("redis_unreachable")
    elif follower.stale(STALE_AFTER_SECONDS):
        reasons.append("routing_stale")
    if refused:
        reasons.append("checkpoints_refused")
    if not snap.table.routes:
        reasons.append("no_model")
    return reasons, {
        "status": "degraded" if reasons else "ok",
        "reasons": reasons,
        "routing_version": snap.table.version,
        "routes": {r.checkpoint_id: r.percent for r in snap.table.routes},
        "champion": snap.table.champion,
        "kill_switch": snap.kill.on,
        "redis": snap.redis_ok,
        "refused": refused,
    }


def create_app(service: Service) -> FastAPI:
    """The ASGI app; its lifespan starts and stops the routing follower and the log."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.follower.start()
        # What startup allocated (libraries, models) lives for good: keep it out of
        # the collector's scans, which otherwise show in the latency tail.
        gc.freeze()
        try:
            yield
        finally:
            service.follower.stop()
            left = service.outbox.close()
            if left:
                log.error("%d served records were not delivered before shutdown", left)
            service.online.close()

    app = FastAPI(title="Loopline serving", lifespan=lifespan, docs_url=None, redoc_url=None)
    metrics = service.metrics

    log_events = service.settings.serving_log_events

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        arrived = utcnow()
        if not service.authorised(request):
            metrics.requests.labels("unauthorised").inc()
            return _json(
                {"reason": "unauthorised", "detail": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer", **CLOSE},
            )
        try:
            raw = await read_body(request.stream(), request.headers.get("content-length"))
            req = parse(raw)
            features, imputed = service.validator.validate(req.features, impute=True)
        except ClientDisconnect:
            metrics.requests.labels("disconnected").inc()
            return Response(status_code=400)  # nobody reads it
        except BadRequest as exc:
            metrics.requests.labels("rejected").inc()
            # Refused unread: closing the connection stops taking in the rest.
            headers = CLOSE if exc.status == 413 else None
            return _json(exc.body(), status_code=exc.status, headers=headers)
        except RecordError as exc:
            metrics.requests.labels("rejected").inc()
            return _json({"reason": exc.reason.value, "detail": exc.detail}, status_code=422)
        try:
            # Off the event loop: it reads Redis (online features), which may be slow.
            scored = await run_in_threadpool(service.predict, req.entity_id, features)
        except Exception:  # whatever went wrong, the caller gets an answer, not a 500
            log.exception("prediction failed for entity %s", req.entity_id)
            scored = Scored(
                service.fallback.score(features), FALLBACK_VERSION, FallbackReason.INTERNAL
            )
        value, version, reason = scored.score, scored.version, scored.reason
        event_id = req.event_id or new_event_id()
        fallback = reason is not None
        if log_events and req.log:
            # The request features as sent (validated): the streams impute, as for any event.
            sent = {k: v for k, v in features.items() if k not in imputed}
            service.log_event(event_id, req.entity_id, arrived, sent, scored)
        latency = time.perf_counter() - started
        service.outbox.prediction(
            Prediction(
                event_id=event_id,
                entity_id=req.entity_id,
                model_version=version,
                score=value,
                ts=utcnow(),
                fallback=fallback,
                latency_ms=latency * 1000,
            )
        )
        body: dict[str, Any] = {
            "score": value,
            "model_version": version,
            "event_id": event_id,
            "fallback": fallback,
        }
        if reason is not None:
            body["fallback_reason"] = reason.value
            metrics.fallbacks.labels(reason.value).inc()
        metrics.requests.labels("fallback" if fallback else "ok").inc()
        metrics.predictions.inc(version, fallback)
        metrics.latency.observe(latency)
        return _json(body)

    # A plain route: the handler parses its own body, so FastAPI's dependency and
    # validation machinery would only add time to every request.
    app.add_route("/predict", predict, methods=["POST"])

    async def ready(request: Request) -> Response:
        reasons, body = readiness(service)
        if not service.authorised(request):
            # A load balancer needs the code; what serves and why is for operators.
            body = {"status": body["status"], "reasons": reasons}
        return _json(body, status_code=503 if reasons else 200)

    app.add_route("/healthz", ready, methods=["GET"])
    app.add_route("/readyz", ready, methods=["GET"])

    @app.get("/livez")
    async def livez() -> Response:
        if service.follower.alive(LIVE_WITHIN_SECONDS):
            return _json({"status": "ok"})
        return _json({"status": "down", "reasons": ["routing_follower_stopped"]}, 503)

    async def prometheus(request: Request) -> Response:
        if not service.authorised(request):
            return _json(
                {"reason": "unauthorised", "detail": "scrape the metrics port, or send the token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", prometheus, methods=["GET"])

    return app
