"""The pusher exports the routing state in Redis as it is at scrape time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from loopline.contracts import utcnow
from loopline.routing import RampStatus, RoutingStore, serve_only, split
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from pusher.metrics import PusherMetrics
from pusher.ramp import start

SPEC = load_spec(DEFAULT_SPEC)


@pytest.fixture
def store(redis_url: str, tmp_path: Path) -> Iterator[RoutingStore]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = Settings.from_env(
        {}, redis_url=redis_url, topic_prefix=prefix, state_dir=tmp_path / "state", env="dev"
    )
    store = RoutingStore(settings)
    yield store
    client = redis.Redis.from_url(redis_url)
    with client:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    store.close()


def test_routing_version_and_the_ramp_as_they_are_in_redis(store: RoutingStore) -> None:
    metrics = PusherMetrics(store)
    value = metrics.registry.get_sample_value
    assert value("loopline_pusher_routing_version") == 0
    assert value("loopline_pusher_ramp_stage", {"candidate": "b"}) is None  # no ramp yet
    assert value("loopline_pusher_verdicts_total", {"verdict": "refused"}) == 0

    store.update(lambda t, _: (serve_only(t, "a", "first"), None), "test")
    begun = utcnow() - timedelta(seconds=400)
    ramp = start(SPEC, "b", "a", begun)
    store.update(lambda t, _: (split(t, "b", "a", ramp.percent, "ramp"), ramp), "test")
    b = {"candidate": "b"}
    assert value("loopline_pusher_routing_version") == 2
    assert value("loopline_pusher_ramp_stage", b) == 1
    assert value("loopline_pusher_ramp_stages", b) == len(SPEC.ramp.stages)
    assert value("loopline_pusher_ramp_percent", b) == SPEC.ramp.stages[0]
    assert value("loopline_pusher_ramp_status", b | {"status": "ramping"}) == 1
    assert value("loopline_pusher_ramp_status", b | {"status": "paused"}) == 0
    assert value("loopline_pusher_ramp_dwell_target_seconds", b) == SPEC.ramp.dwell_seconds
    # Nobody advanced the ramp: its dwell keeps growing past the target, scrape after scrape.
    dwell = value("loopline_pusher_ramp_stage_dwell_seconds", b)
    assert dwell is not None and dwell >= 400
    assert value("loopline_pusher_ramp_last_change_timestamp_seconds", b) == begun.timestamp()

    paused = ramp.moved(RampStatus.PAUSED, "operator")
    store.update(lambda t, _: (None, paused), "test")
    assert value("loopline_pusher_ramp_status", b | {"status": "paused"}) == 1
    assert value("loopline_pusher_ramp_status", b | {"status": "ramping"}) == 0
    assert value("loopline_pusher_ramp_stage_dwell_seconds", b) == paused.dwelled
    assert value("loopline_pusher_ramp_last_change_timestamp_seconds", b) == (
        paused.updated_at.timestamp()
    )
