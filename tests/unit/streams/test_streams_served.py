"""Examples of served events carry what serving read; skew against the streams is counted."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from loopline.errors import Reason
from loopline.spec import DEFAULT_SPEC, Spec, load_spec
from tests.unit.streams.test_streams_partition import GOOD, NOW, Feed, event, label


@pytest.fixture
def spec() -> Spec:
    return load_spec(DEFAULT_SPEC)


def served_event(
    event_id: str,
    entity_values: dict[str, object] | None,
    entity: str = "u1",
    ts_offset: float = 0.0,
) -> tuple[bytes, bytes]:
    key, raw = event(event_id, entity, ts=NOW + timedelta(seconds=ts_offset))
    record = orjson.loads(raw)
    record["served"] = {
        "entity": entity_values,
        "read_at": (NOW + timedelta(seconds=ts_offset)).isoformat(),
        "versions": ["ck-1"],
    }
    return key, orjson.dumps(record)


def example_of(feed: Feed, event_id: str) -> dict[str, object]:
    for eid, _, raw in feed.state.batch.examples:
        if eid == event_id:
            return orjson.loads(raw)  # type: ignore[no-any-return]
    raise AssertionError(f"no example for {event_id}")


LOGGED = {"impressions_1h": 7, "click_rate_24h": 0.25, "seconds_since_last": 42.0}


def test_a_served_event_s_example_carries_the_entity_values_serving_read(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(served_event("e1", LOGGED))
    feed.label(label("e1", 1))
    features = example_of(feed, "e1")["features"]
    assert features == {**features, **LOGGED}  # not the streams' 0, None, None
    assert features["price"] == GOOD["price"]
    counts = feed.state.counts
    assert counts["examples_served"] == 1 and "examples_recomputed" not in counts
    assert feed.balanced()


def test_the_entity_state_still_learns_from_a_served_event(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(served_event("e1", LOGGED))
    assert feed.state.entity("u1").values()["impressions_1h"] == 1
    (row,) = feed.state.feature_rows()
    assert row[0] == "u1" and row[1]["impressions_1h"] == 1


def test_an_event_nobody_scored_keeps_the_recomputed_values(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1"))
    feed.event(served_event("e2", None, ts_offset=5))  # served, but no online read
    feed.label(label("e1", 0))
    feed.label(label("e2", 0))
    assert example_of(feed, "e1")["features"]["impressions_1h"] == 0  # type: ignore[index]
    assert example_of(feed, "e2")["features"]["impressions_1h"] == 1  # type: ignore[index]
    assert feed.state.counts["examples_recomputed"] == 2
    assert "served_compared" not in feed.state.counts


def test_skew_is_counted_by_feature_where_serving_read_other_values(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1"))  # the streams now hold one impression, gap unknown
    agreeing = {"impressions_1h": 1, "click_rate_24h": None, "seconds_since_last": None}
    feed.event(served_event("e2", agreeing, ts_offset=5))
    lagging = {"impressions_1h": 1, "click_rate_24h": None, "seconds_since_last": None}
    feed.event(served_event("e3", lagging, ts_offset=10))  # the streams hold 2 and 5.0
    counts = feed.state.counts
    assert counts["served_compared"] == 2 and counts["served_skewed"] == 1
    assert counts["skew.impressions_1h"] == 1 and counts["skew.seconds_since_last"] == 1
    assert "skew.click_rate_24h" not in counts


def test_a_new_entity_serving_found_nothing_for_is_not_skew(spec: Spec) -> None:
    feed = Feed(spec)
    nothing = dict.fromkeys(LOGGED)
    feed.event(served_event("e1", nothing))
    feed.label(label("e1", 1))
    assert feed.state.counts["served_compared"] == 1
    assert "served_skewed" not in feed.state.counts
    assert example_of(feed, "e1")["features"]["impressions_1h"] is None  # type: ignore[index]


def test_served_values_of_features_the_spec_lacks_are_deadlettered(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(served_event("e1", {"impressions_7d": 3}))
    (dead,) = feed.state.batch.deadletters
    assert dead.reason is Reason.UNKNOWN_FEATURE and "impressions_7d" in dead.detail
    assert feed.balanced()
