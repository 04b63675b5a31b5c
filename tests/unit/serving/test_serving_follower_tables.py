"""What a partly loadable routing table serves: never more than a candidate's share."""

from __future__ import annotations

from loopline.routing import Route, RoutingTable
from serving.follower import _servable

RAMP = RoutingTable(
    version=3, routes=(Route("candidate", 5), Route("champion", 95)), champion="champion"
)
USERS = [f"user-{i}" for i in range(4000)]


def shares(table: RoutingTable) -> dict[str | None, float]:
    picks = [table.pick(u) for u in USERS]
    return {v: picks.count(v) / len(picks) for v in set(picks)}


def test_a_complete_table_serves_as_written() -> None:
    table = _servable(RAMP, {"candidate": 1, "champion": 2})
    assert table.routes == RAMP.routes
    assert None not in shares(table)


def test_a_missing_candidate_share_goes_to_the_champion() -> None:
    table = _servable(RAMP, {"champion": 2})
    assert table.routes == (Route("champion", 100),)
    assert shares(table) == {"champion": 1.0}


def test_a_missing_champion_never_grows_the_candidate() -> None:
    table = _servable(RAMP, {"candidate": 1})
    assert table.routes == (Route("candidate", 5),)
    observed = shares(table)
    assert 0.03 < observed["candidate"] < 0.07
    assert observed[None] > 0.9  # the rest is answered by the fallback


def test_nothing_loaded_means_fallback_for_everyone() -> None:
    assert shares(_servable(RAMP, {})) == {None: 1.0}
