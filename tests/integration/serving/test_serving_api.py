from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from feature_repo.online import OnlineFeatures
from loopline.contracts import Prediction
from loopline.devstack import free_port, start_redis
from loopline.routing import RoutingStore, serve_only
from loopline.scoring import score
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, Spec, load_spec
from loopline.validation import FeatureValidator
from tests.integration.serving.serving_support import (
    record_qualified,
    serving,
    store_of,
    wait_for,
)
from tests.kafka_support import read_topic
from tests.unit.pusher.pusher_support import RaisingModel, SlowModel, examples, save, train

REQUEST = {"price": 20.0, "category": "alpaca", "hour": 9, "device": "mobile"}


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(DEFAULT_SPEC)


@pytest.fixture(scope="module")
def model(spec: Spec) -> Any:
    return train(spec, examples(2000, seed=2))


def route_all(settings: Settings, checkpoint_id: str) -> int:
    """Serve one checkpoint to everyone, as if the pusher had qualified and pushed it."""
    store = RoutingStore(settings)
    try:
        record_qualified(settings, store, checkpoint_id)
        return store.update(
            lambda t, _: (serve_only(t, checkpoint_id, "test"), None), "test"
        ).version
    finally:
        store.close()


def serving_version(client: httpx.Client, version: int) -> bool:
    return bool(client.get("/healthz").json()["routing_version"] >= version)


def predict(client: httpx.Client, entity: str = "u1", **extra: Any) -> dict[str, Any]:
    reply = client.post("/predict", json={"entity_id": entity, "features": REQUEST} | extra)
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


def _ok_requests(metrics: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "loopline_serving_requests_total" and s.labels.get("outcome") == "ok"
    )


def test_answers_merge_online_features_and_are_logged(
    settings: Settings, spec: Spec, model: Any
) -> None:
    save(store_of(settings), spec, "ck-a", model)
    version = route_all(settings, "ck-a")
    online = OnlineFeatures(settings, spec)
    now = datetime.now(UTC)
    hot = {"click_rate_24h": 0.3, "impressions_1h": 4, "seconds_since_last": 60}
    online.write([("hot", hot, now), ("cold", hot | {"click_rate_24h": 0.0}, now)])
    online.close()
    with serving(settings, spec) as (url, _), httpx.Client(base_url=url, timeout=5) as client:
        wait_for(lambda: serving_version(client, version), "serving to follow the routing table")
        before = _ok_requests(client.get("/metrics").text)  # the registry is per process
        answers = [predict(client, "hot", event_id="ev-hot"), predict(client, "cold")]
        health = client.get("/healthz").json()
        metrics = client.get("/metrics").text
    features, _ = FeatureValidator(spec).validate(REQUEST, impute=True)
    assert answers[0]["score"] == pytest.approx(score(model, features | hot, "binary"))
    assert answers[0]["score"] > answers[1]["score"]
    assert [a["model_version"] for a in answers] == ["ck-a", "ck-a"]
    assert [a["fallback"] for a in answers] == [False, False]
    assert answers[0]["event_id"] == "ev-hot" and answers[1]["event_id"]
    assert health["status"] == "ok" and health["routes"] == {"ck-a": 100.0}
    assert _ok_requests(metrics) >= before + 2  # other servers in this process count too
    served = {
        (s.name, s.labels.get("model_version")): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert served["loopline_serving_route_percent", "ck-a"] == 100.0
    created = store_of(settings).manifest("ck-a").created_at.timestamp()
    assert served["loopline_serving_model_created_timestamp_seconds", "ck-a"] == created
    logged = [Prediction.from_json(m.value()) for m in read_topic(settings, "predictions", 2, 30)]
    assert sorted(p.event_id for p in logged) == sorted(a["event_id"] for a in answers)
    assert {p.model_version for p in logged} == {"ck-a"}


def test_bad_requests_get_4xx_with_the_reason(settings: Settings, spec: Spec) -> None:
    secured = settings.replace(serving_token="s3cret")
    with serving(secured, spec) as (url, _), httpx.Client(base_url=url, timeout=5) as client:
        body = {"entity_id": "u1", "features": REQUEST}
        assert client.post("/predict", json=body).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.post("/predict", json=body, headers=wrong).status_code == 401
        client.headers["Authorization"] = "Bearer s3cret"
        assert client.post("/predict", json=body).status_code == 200
        cases = [
            (b"{not json", 400, "malformed_json"),
            (
                orjson.dumps({"entity_id": "u", "features": REQUEST | {"hour": 25}}),
                422,
                "out_of_range",
            ),
            (
                orjson.dumps({"entity_id": "u", "features": REQUEST | {"color": "red"}}),
                422,
                "unknown_feature",
            ),
            (orjson.dumps({"entity_id": "u", "features": {"hour": 3}}), 422, "missing_field"),
            (
                orjson.dumps({"entity_id": "u", "features": REQUEST | {"device": 3}}),
                422,
                "wrong_type",
            ),
            (orjson.dumps({"entity_id": ""}), 422, "missing_field"),
        ]
        for raw, status, reason in cases:
            reply = client.post(
                "/predict", content=raw, headers={"content-type": "application/json"}
            )
            assert (reply.status_code, reply.json()["reason"]) == (status, reason), raw
            assert reply.json()["detail"]
        assert client.get("/livez").status_code == 200
        # No model routed: only the fallback answers, and readiness says so.
        health = client.get("/healthz")
        assert (health.status_code, health.json()["reasons"]) == (503, ["no_model"])


def test_a_tampered_checkpoint_is_refused(settings: Settings, spec: Spec, model: Any) -> None:
    store = store_of(settings)
    save(store, spec, "ck-good", model)
    save(store, spec, "ck-bad", model)
    blob = Path(settings.checkpoint_dir) / "ck-bad.model"
    blob.write_bytes(blob.read_bytes()[:-8] + b"tampered")
    route_all(settings, "ck-good")
    with serving(settings, spec) as (url, _), httpx.Client(base_url=url, timeout=5) as client:
        wait_for(lambda: serving_version(client, 1), "the good champion")
        route_all(settings, "ck-bad")
        health = wait_for(lambda: client.get("/healthz").json()["refused"], "the refusal")
        assert "sha256" in health["ck-bad"]
        answer = predict(client)
        assert (answer["model_version"], answer["fallback"]) == ("ck-good", False)
    # Starting with nothing verified, serving answers from the fallback.
    with serving(settings, spec) as (url, _), httpx.Client(base_url=url, timeout=5) as client:
        answer = predict(client)
        assert (answer["fallback"], answer["fallback_reason"]) == (True, "no_model")
        assert answer["score"] == spec.fallback.table["alpaca"]
        health = client.get("/healthz")
        assert (health.status_code, health.json()["status"]) == (503, "degraded")


def test_a_checkpoint_the_pusher_did_not_qualify_is_refused(
    settings: Settings, spec: Spec, model: Any
) -> None:
    store = store_of(settings)
    save(store, spec, "ck-unjudged", model)
    routing = RoutingStore(settings)
    try:
        routing.update(lambda t, _: (serve_only(t, "ck-unjudged", "script"), None), "script")
    finally:
        routing.close()
    with serving(settings, spec) as (url, _), httpx.Client(base_url=url, timeout=5) as client:
        health = wait_for(lambda: client.get("/healthz").json()["refused"], "the refusal")
        assert "not qualified" in health["ck-unjudged"]
        answer = predict(client)
        assert (answer["fallback"], answer["fallback_reason"]) == (True, "no_model")


def test_fallback_when_the_model_fails_or_the_kill_switch_is_on(
    settings: Settings, spec: Spec, model: Any
) -> None:
    store = store_of(settings)
    save(store, spec, "ck-ok", model)
    save(store, spec, "ck-raises", RaisingModel())
    save(store, spec, "ck-slow", SlowModel(model, 0.02))
    routing = RoutingStore(settings)
    with serving(settings, spec) as (url, _), httpx.Client(base_url=url, timeout=5) as client:
        answer = predict(client)
        assert (answer["fallback"], answer["fallback_reason"]) == (True, "no_model")
        for checkpoint_id, reason in (("ck-raises", "model_error"), ("ck-slow", "latency_budget")):
            version = route_all(settings, checkpoint_id)
            wait_for(lambda v=version: serving_version(client, v), checkpoint_id)  # type: ignore[misc]
            answer = wait_for(lambda: (a := predict(client))["fallback"] and a, reason)
            assert answer["fallback_reason"] == reason
            assert answer["model_version"] == checkpoint_id
            assert answer["score"] == 0.07
        version = route_all(settings, "ck-ok")
        wait_for(lambda: serving_version(client, version), "ck-ok")
        routing.set_kill_switch(True, "test", "tester")
        answer = wait_for(lambda: (a := predict(client))["fallback"] and a, "the kill switch")
        assert answer["fallback_reason"] == "kill_switch"
        routing.set_kill_switch(False, "test", "tester")
        answer = wait_for(lambda: not (a := predict(client))["fallback"] and a, "the model back")
        assert answer["model_version"] == "ck-ok"
        metrics = client.get("/metrics").text
    routing.close()
    for reason in ("no_model", "model_error", "latency_budget", "kill_switch"):
        assert f'loopline_serving_fallbacks_total{{reason="{reason}"}}' in metrics


def test_fallback_when_redis_is_unreachable(
    settings: Settings, spec: Spec, model: Any, tmp_path: Path
) -> None:
    server = start_redis("127.0.0.1", free_port(), tmp_path / "redis")
    try:
        private = settings.replace(redis_url=f"redis://127.0.0.1:{server.port}/0")
        save(store_of(private), spec, "ck-a", model)
        version = route_all(private, "ck-a")
        with serving(private, spec) as (url, _), httpx.Client(base_url=url, timeout=5) as client:
            wait_for(lambda: serving_version(client, version), "ck-a")
            assert not predict(client)["fallback"]
            server.stop()
            answer = wait_for(lambda: (a := predict(client))["fallback"] and a, "the fallback")
            assert answer["fallback_reason"] == "redis_unavailable"
            assert answer["model_version"] == "fallback"
            wait_for(lambda: client.get("/healthz").json()["redis"] is False, "healthz to tell")
            assert predict(client)["fallback_reason"] == "redis_unavailable"
    finally:
        server.stop()
