"""Serving's per-version series follow the routing table: a checkpoint no longer served
leaves /metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from tests.integration.serving.serving_support import serving, store_of, wait_for
from tests.integration.serving.test_serving_api import REQUEST, route_all, serving_version
from tests.unit.pusher.pusher_support import ConstantModel, save


def _versions(client: httpx.Client) -> dict[str, set[str]]:
    """Model versions in each per-version family of a scrape."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if "model_version" in sample.labels:
                found.setdefault(sample.name, set()).add(sample.labels["model_version"])
    return found


def test_series_of_a_checkpoint_no_longer_served_leave_the_metrics(settings: Settings) -> None:
    spec = load_spec(DEFAULT_SPEC)
    for cid in ("ck-old", "ck-new"):
        save(store_of(settings), spec, cid, ConstantModel(0.2))
    version = route_all(settings, "ck-old")
    with serving(settings, spec) as (url, service), httpx.Client(base_url=url, timeout=5) as client:
        service.metrics.predictions.retire_after = 0.0
        wait_for(lambda: serving_version(client, version), "serving to follow ck-old")
        body = {"entity_id": "u1", "features": REQUEST}
        assert client.post("/predict", json=body).json()["model_version"] == "ck-old"
        before = _versions(client)
        version = route_all(settings, "ck-new")
        wait_for(lambda: serving_version(client, version), "serving to follow ck-new")
        assert client.post("/predict", json=body).json()["model_version"] == "ck-new"
        _versions(client)  # the scrape that sees ck-old out of the table
        after = _versions(client)
    assert before["loopline_serving_predictions_total"] == {"ck-old"}
    assert before["loopline_serving_route_percent"] == {"ck-old"}
    assert after["loopline_serving_predictions_total"] == {"ck-new"}
    assert after["loopline_serving_route_percent"] == {"ck-new"}
    assert after["loopline_serving_model_created_timestamp_seconds"] == {"ck-new"}
