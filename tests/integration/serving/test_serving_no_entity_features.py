"""A spec without entity features: serving answers from the model, reading no online store."""

from __future__ import annotations

import tomllib
from dataclasses import replace

import httpx
import pytest

from loopline.routing import RoutingStore, serve_only
from loopline.scoring import score
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, parse_spec
from loopline.validation import FeatureValidator
from tests.integration.serving.serving_support import (
    record_qualified,
    serving,
    store_of,
    wait_for,
)
from tests.unit.pusher.pusher_support import examples, save, train

REQUEST = {"price": 20.0, "category": "alpaca", "hour": 9, "device": "mobile", "discount": True}


def test_a_spec_without_entity_features_is_served_by_its_model(settings: Settings) -> None:
    data = tomllib.loads(DEFAULT_SPEC.read_text())
    data["entity"]["features"] = {}
    spec = parse_spec(data)
    rows = [
        replace(ex, features={k: ex.features[k] for k in spec.features})
        for ex in examples(2000, seed=2)
    ]
    model = train(spec, rows)
    save(store_of(settings), spec, "ck-plain", model)
    routing = RoutingStore(settings)
    try:
        record_qualified(settings, routing, "ck-plain")
        version = routing.update(
            lambda t, _: (serve_only(t, "ck-plain", "test"), None), "test"
        ).version
    finally:
        routing.close()
    with serving(settings, spec) as (url, _), httpx.Client(base_url=url, timeout=5) as client:
        wait_for(
            lambda: client.get("/healthz").json()["routing_version"] >= version,
            "serving to follow the routing table",
        )
        reply = client.post("/predict", json={"entity_id": "u1", "features": REQUEST})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["fallback"] is False and answer["model_version"] == "ck-plain"
    features, _ = FeatureValidator(spec).validate(REQUEST, impute=True)
    assert answer["score"] == pytest.approx(score(model, features, "binary"))
