"""Shared state in Redis (routing, ramp, kill switch, heartbeats) decodes from any bytes
to a value or a RecordError, never another exception."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopline import heartbeat
from loopline.contracts import utcnow
from loopline.errors import Reason, RecordError
from loopline.routing import KillSwitch, RampState, Route, RoutingTable

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["9999-12-31T23:59:59-10:00", "2026-01-01T00:00:00Z", "ramping"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)

NOW = utcnow()
VALID: dict[Any, dict[str, Any]] = {
    RoutingTable: orjson.loads(RoutingTable(3, (Route("a", 100.0),), "a", "r", NOW).to_json()),
    RampState: orjson.loads(RampState("c", "b", (1.0, 50.0), 60.0).to_json()),
    KillSwitch: {"on": True, "reason": "r", "by": "op", "at": NOW.isoformat()},
}


def decodes_or_rejects(cls: Any, raw: bytes) -> None:
    try:
        cls.from_json(raw)
    except RecordError as exc:
        assert isinstance(exc.reason, Reason)


@given(st.sampled_from(list(VALID)), st.binary(max_size=200))
def test_random_bytes(cls: Any, raw: bytes) -> None:
    decodes_or_rejects(cls, raw)


@given(st.sampled_from(list(VALID)), st.data())
def test_mutated_state(cls: Any, data: st.DataObject) -> None:
    obj = dict(VALID[cls])
    for name in data.draw(st.lists(st.sampled_from(sorted(obj)), max_size=3, unique=True)):
        if data.draw(st.booleans()):
            del obj[name]
        else:
            obj[name] = data.draw(json_values)
    decodes_or_rejects(cls, json.dumps(obj).encode())


def test_valid_state_still_decodes() -> None:
    for cls, obj in VALID.items():
        assert cls.from_json(orjson.dumps(obj)) is not None


@pytest.mark.parametrize("stage", [-1, 2, 10**30])
def test_a_ramp_stage_outside_its_stages_is_rejected(stage: int) -> None:
    with pytest.raises(RecordError):
        RampState.from_json(json.dumps({**VALID[RampState], "stage": stage}))


beats = st.fixed_dictionaries(
    {"at": st.just(NOW.isoformat()) | json_values},
    optional={"applied": json_values, "refused_commands": json_values, "model": json_values},
)


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()


@given(st.lists(st.binary(max_size=60) | json_values.map(_dumps) | beats.map(_dumps), max_size=5))
def test_heartbeats_skip_what_they_cannot_read(raws: list[bytes]) -> None:
    good = orjson.dumps({"at": NOW, "model": "shop", "applied": ["c1"]})
    keys = [b"p.worker:\xff" + str(i).encode() for i in range(len(raws) + 1)]
    statuses = heartbeat._parse(keys, [*raws, good], len(b"p.worker:"))
    assert statuses[-1].state["model"] == "shop"
    for status in statuses:  # what a status reader asks of each one holds up
        assert isinstance(status.applied, set)
        assert isinstance(status.refused_commands, dict)
        status.age()
