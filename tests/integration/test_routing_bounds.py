"""Routing state in Redis stays bounded: applied Commands age out, rolled-back ids are
kept while they can be picked again."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from loopline.contracts import utcnow
from loopline.routing import (
    ROLLBACK_DEPTH,
    AlreadyApplied,
    RampState,
    RoutingStore,
    RoutingTable,
    serve_only,
)
from loopline.settings import Settings


def _serve(store: RoutingStore, cid: str, **kwargs: Any) -> RoutingTable:
    def change(table: RoutingTable, _: RampState | None) -> tuple[RoutingTable, None]:
        return serve_only(table, cid, "test"), None

    return store.update(change, f"serve {cid}", **kwargs)


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


def test_applied_commands_older_than_the_horizon_are_trimmed(settings: Settings) -> None:
    store = RoutingStore(settings.replace(control_applied_days=1.0))
    client = _client(settings)
    two_days_ago = utcnow().timestamp() - 2 * 86_400
    client.zadd(store.applied_key, {"ancient": two_days_ago, "recent": utcnow().timestamp()})
    assert store.command_applied("ancient")  # still there until something is added

    store.set_kill_switch(True, "test", "test", command_id="cmd-1")
    _serve(store, "ck-1", command_id="cmd-2")

    assert {m.decode() for m in client.zrange(store.applied_key, 0, -1)} == {
        "recent",
        "cmd-1",
        "cmd-2",
    }
    assert not store.command_applied("ancient")
    assert store.command_applied("cmd-1") and store.command_applied("cmd-2")
    with pytest.raises(AlreadyApplied):
        _serve(store, "ck-2", command_id="cmd-2")
    with pytest.raises(AlreadyApplied):
        store.set_kill_switch(False, "test", "test", command_id="cmd-1")
    assert store.table().champion == "ck-1"


def test_an_applied_set_from_an_earlier_release_becomes_the_sorted_set(
    settings: Settings,
) -> None:
    client = _client(settings)
    key = settings.key("control_applied")
    client.sadd(key, "old-1", "old-2")
    store = RoutingStore(settings)
    with pytest.raises(AlreadyApplied):
        _serve(store, "ck-1", command_id="old-1")
    assert client.type(key) == b"zset"
    assert store.command_applied("old-2")
    _serve(store, "ck-1", command_id="new-1")
    assert client.zcard(key) == 3
    # Another process that had not looked yet finds it converted already.
    assert RoutingStore(settings).command_applied("old-1")


def test_rolled_back_keeps_only_what_could_be_picked_again(settings: Settings) -> None:
    store = RoutingStore(settings)
    _client(settings).sadd(store.rolled_back_key, "long-gone")
    for i in range(ROLLBACK_DEPTH + 5):
        _serve(store, f"ck-{i}", retire_champion=True)
    rolled_back = store.rolled_back()
    former = set(store.former_champions())
    assert "long-gone" not in rolled_back
    assert rolled_back <= former | store.served()
    assert len(rolled_back) == ROLLBACK_DEPTH  # every former champion still a candidate
    assert "ck-0" not in rolled_back  # fell off the list of former champions
