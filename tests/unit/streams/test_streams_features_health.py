"""Entity features, the data-health monitor and the small helpers, without servers."""

from __future__ import annotations

import pytest

from feature_repo.definitions import build, project_name, ttl_seconds
from feature_repo.online import connection_string, from_proto, to_proto
from loopline.accounting import Accounting
from loopline.spec import DEFAULT_SPEC, Spec, load_spec
from streams.features import EntityFeatureSpec
from streams.health import HealthMonitor

T = 1_780_000_000.0


@pytest.fixture
def spec() -> Spec:
    return load_spec(DEFAULT_SPEC)


def test_entity_features_count_rate_and_recency(spec: Spec) -> None:
    entity = EntityFeatureSpec(spec).new()
    assert entity.values() == {
        "impressions_1h": 0,
        "click_rate_24h": None,
        "seconds_since_last": None,
    }
    entity.on_event(T)
    entity.on_event(T + 30)
    entity.on_label(T + 40, 1.0)
    entity.on_label(T + 41, 0.0)
    assert entity.values() == {
        "impressions_1h": 2,
        "click_rate_24h": 0.5,
        "seconds_since_last": 30.0,
    }
    entity.on_event(T + 2 * 3600)
    assert entity.values()["impressions_1h"] == 1  # the first two left the hour


def test_entity_time_only_moves_forward(spec: Spec) -> None:
    entity = EntityFeatureSpec(spec).new()
    entity.on_event(T)
    before = entity.as_of
    entity.on_label(T - 10, 1.0)  # a label stamped earlier still changes the features
    assert entity.as_of > before


def test_health_pauses_once_per_incident_with_evidence(spec: Spec) -> None:
    monitor = HealthMonitor(spec, T)
    window = spec.health.window_seconds
    now = T
    for _ in range(spec.health.baseline_windows):
        for _ in range(spec.health.min_events):
            monitor.observe_event({"price": 10.0, "hour": 9}, ())
        now += window
        assert monitor.tick(now) is None
    for _ in range(spec.health.min_events * 10):
        monitor.observe_event({"price": 10.0, "hour": 9}, ())
    now += window
    evidence = monitor.tick(now)
    assert evidence is not None
    assert [b["check"] for b in evidence["breaches"]] == ["volume_ratio"]
    assert evidence["observed"]["events"] == spec.health.min_events * 10
    for _ in range(spec.health.min_events * 10):
        monitor.observe_event({"price": 10.0, "hour": 9}, ())
    assert monitor.tick(now + window) is None  # same incident: no second pause


def test_health_flags_rejects_and_missing_features(spec: Spec) -> None:
    monitor = HealthMonitor(spec, T)
    for _ in range(spec.health.baseline_windows):
        for _ in range(100):
            monitor.observe_event({"price": 10.0, "hour": 9}, ())
        monitor.tick(monitor.window.start + spec.health.window_seconds)
    for _ in range(100):
        monitor.observe_event({"price": 10.0, "hour": 9}, ("category",))
        monitor.observe_reject("malformed_json")
    evidence = monitor.tick(monitor.window.start + spec.health.window_seconds)
    assert evidence is not None
    checks = {(b["check"], b.get("feature")) for b in evidence["breaches"]}
    assert {("reject_rate", None), ("missing_rate", "category")} <= checks


def test_feast_definitions_come_from_the_spec(spec: Spec) -> None:
    definitions = build(spec)
    assert definitions.view.name == "user_features"
    assert [f.name for f in definitions.view.features] == list(spec.entity.features)
    assert definitions.entity.join_key == "user_id"
    assert ttl_seconds(spec) == 86400
    assert project_name("t1a2b.") == "t1a2b" and project_name("") == "loopline"
    assert project_name("shop-eu.") == "shop_eu"


def test_values_and_connections_translate() -> None:
    for value in (None, True, 3, 2.5, "x"):
        assert from_proto(to_proto(value).SerializeToString()) == value
    assert connection_string("redis://:pw@h:6380/2") == "h:6380,db=2,password=pw"


def test_accounting_balances() -> None:
    books = Accounting(
        {
            "events": 5,
            "examples": 2,
            "pending": 1,
            "deadlettered": 1,
            "duplicates": 1,
            "rejected.events.too_old": 1,
        }
    )
    assert books.events_balance == 0 and books.labels_balance == 0
    assert books.rejected == {"events.too_old": 1}


def test_label_rate_is_not_judged_before_the_horizon_has_passed(spec: Spec) -> None:
    monitor = HealthMonitor(spec, T)
    window, now = spec.health.window_seconds, T

    def run_window(events: int, labelled: int) -> dict[str, object] | None:
        nonlocal now
        for i in range(events):
            monitor.observe_event({"price": 10.0, "hour": 9}, ())
            monitor.observe_example(observed=i < labelled)
        now += window
        return monitor.tick(now)

    # Before the horizon only early (observed) labels arrive: a rate of 1, then a drop.
    while now + window < T + spec.label.horizon_seconds:
        assert run_window(100, 100) is None
    for _ in range(spec.health.baseline_windows):
        assert run_window(100, 5) is None  # settled: ~5% labelled, no alarm
    evidence = run_window(100, 60)  # a real change in the label rate after settling
    assert evidence is not None
    assert [b["check"] for b in evidence["breaches"]] == ["label_rate_change"]
