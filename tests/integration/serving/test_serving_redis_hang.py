"""Serving against a Redis that stops answering (SIGSTOP): readiness tells, answers keep coming."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from loopline.routing import RoutingStore, serve_only
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from tests.integration.serving.serving_support import (
    hang,
    private_redis,
    record_qualified,
    resume,
    serving,
    store_of,
    wait_for,
)
from tests.unit.pusher.pusher_support import examples, save, train

REQUEST = {
    "entity_id": "u1",
    "features": {"price": 20.0, "category": "alpaca", "hour": 9, "device": "mobile"},
}


def test_readiness_is_503_while_redis_hangs_and_200_once_it_answers(
    settings: Settings, tmp_path: Path
) -> None:
    spec = load_spec(DEFAULT_SPEC)
    with private_redis(settings, tmp_path / "redis") as (private, server):
        save(store_of(private), spec, "ck-a", train(spec, examples(500, seed=3)))
        routing = RoutingStore(private)
        record_qualified(private, routing, "ck-a")
        routing.update(lambda t, _: (serve_only(t, "ck-a", "test"), None), "test")
        routing.close()
        with serving(private, spec) as (url, _), httpx.Client(base_url=url, timeout=10) as client:
            wait_for(lambda: client.get("/healthz").status_code == 200, "serving to be ready")
            assert client.get("/readyz").json()["reasons"] == []
            hang(server)
            try:
                reply = wait_for(
                    lambda: (r := client.get("/healthz")).status_code == 503 and r,
                    "readiness to fail",
                    timeout=10,
                )
                assert reply.json()["reasons"] == ["redis_unreachable"]
                assert reply.json()["status"] == "degraded"
                assert client.get("/livez").status_code == 200  # no reason to restart it
                started = time.monotonic()
                answer = client.post("/predict", json=REQUEST).json()
                assert time.monotonic() - started < 1.0
                assert (answer["fallback"], answer["fallback_reason"]) == (
                    True,
                    "redis_unavailable",
                )
                metrics = client.get("/metrics").text
                assert "loopline_serving_ready 0.0" in metrics
            finally:
                resume(server)
            wait_for(lambda: client.get("/healthz").status_code == 200, "readiness back")
            answer = client.post("/predict", json=REQUEST).json()
            assert (answer["fallback"], answer["model_version"]) == (False, "ck-a")
