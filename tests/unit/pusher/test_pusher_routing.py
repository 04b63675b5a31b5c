from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loopline.holdout import DEVELOPMENT_KEY, Holdout
from loopline.routing import (
    RampState,
    RampStatus,
    Route,
    RoutingError,
    RoutingTable,
    bucket,
    serve_only,
    split,
)

ENTITIES = [f"user-{i}" for i in range(3000)]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def shares(table: RoutingTable) -> dict[str | None, float]:
    counts: dict[str | None, int] = {}
    for entity in ENTITIES:
        version = table.pick(entity)
        counts[version] = counts.get(version, 0) + 1
    return {v: 100 * n / len(ENTITIES) for v, n in counts.items()}


def test_split_is_sticky_and_close_to_each_stage() -> None:
    table = RoutingTable()
    for percent in (1, 5, 25, 50, 100):
        ramped = split(table, "new", "old", percent, "test")
        assert abs(shares(ramped).get("new", 0.0) - percent) <= 2
        assert [ramped.pick(e) for e in ENTITIES[:50]] == [ramped.pick(e) for e in ENTITIES[:50]]


def test_raising_the_share_only_moves_entities_to_the_candidate() -> None:
    before = split(RoutingTable(), "new", "old", 5, "test")
    after = split(RoutingTable(), "new", "old", 25, "test")
    for entity in ENTITIES:
        if before.pick(entity) == "new":
            assert after.pick(entity) == "new"


def test_an_empty_table_picks_nothing_and_a_single_route_everything() -> None:
    assert RoutingTable().pick("u") is None
    only = serve_only(RoutingTable(), "a", "first")
    assert {only.pick(e) for e in ENTITIES[:100]} == {"a"}
    assert only.champion == "a"


def test_routing_and_holdout_hashes_are_independent_and_stable() -> None:
    assert bucket("user-1") == bucket("user-1")
    assert 0 <= bucket("user-1") < 100
    assert "e" in Holdout(1.0, DEVELOPMENT_KEY) and "e" not in Holdout(0.0, DEVELOPMENT_KEY)
    share = sum(f"ev-{i}" in Holdout(0.1, DEVELOPMENT_KEY) for i in range(20000)) / 20000
    assert 0.09 < share < 0.11


def test_table_round_trips_through_json() -> None:
    table = RoutingTable(3, (Route("a", 25.0), Route("b", 75.0)), "b", "why", T0)
    assert RoutingTable.from_json(table.to_json()) == table


def ramp(**fields: Any) -> RampState:
    base = RampState(
        "new", "old", (1.0, 50.0, 100.0), 10.0, started_at=T0, stage_started_at=T0, updated_at=T0
    )
    return replace(base, **fields)


def test_ramp_state_round_trips_through_json() -> None:
    state = ramp(status=RampStatus.PAUSED, stage=1, dwelled=3.5, reason="hold")
    assert RampState.from_json(state.to_json()) == state


def test_dwell_counts_ramping_time_only() -> None:
    state = ramp()
    assert state.dwell(T0 + timedelta(seconds=4)) == 4
    paused = state.moved(RampStatus.PAUSED, "look", T0 + timedelta(seconds=4))
    assert paused.dwell(T0 + timedelta(seconds=100)) == 4
    resumed = paused.moved(RampStatus.RAMPING, "go on", T0 + timedelta(seconds=100))
    assert resumed.dwell(T0 + timedelta(seconds=103)) == 7


def test_transitions_are_guarded() -> None:
    paused = ramp().moved(RampStatus.PAUSED, "look")
    with pytest.raises(RoutingError, match="cannot become promoted"):
        paused.moved(RampStatus.PROMOTED, "no")
    with pytest.raises(RoutingError, match="cannot advance"):
        paused.advanced("no")
    done = ramp().moved(RampStatus.ROLLED_BACK, "bad")
    assert not done.active
    for status in RampStatus:
        with pytest.raises(RoutingError):
            done.moved(status, "again")


def test_advancing_walks_the_stages_then_stops() -> None:
    state = ramp()
    assert state.percent == 1
    state = state.advanced("dwelled")
    assert (state.percent, state.dwelled) == (50, 0.0)
    state = state.advanced("dwelled")
    assert state.last_stage
    with pytest.raises(RoutingError):
        state.advanced("past the end")
