from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopline.contracts import Example
from loopline.errors import Reason, RecordError
from trainer.decode import decode

T = datetime(2026, 1, 1, tzinfo=UTC)

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)


@given(
    event_id=st.text(min_size=1, max_size=12),
    seconds=st.integers(0, 10**9),
    features=st.dictionaries(st.text(max_size=8), values, max_size=6),
    label=st.floats(-1e6, 1e6),
)
def test_decode_agrees_with_the_contract(
    event_id: str, seconds: int, features: dict[str, object], label: float
) -> None:
    example = Example(event_id, "u", T + timedelta(seconds=seconds), features, label)  # type: ignore[arg-type]
    raw = example.to_json()
    expected = Example.from_json(raw)
    assert decode(raw) == (expected.event_id, expected.ts, expected.features, expected.label)


def test_odd_but_valid_records_take_the_contract_path() -> None:
    obj = orjson.loads(Example("e1", "u", T, {"a": 1}, 1.0).to_json())
    obj["label"] = True
    obj["ts"] = "2026-01-01T02:00:00+02:00"
    event_id, ts, _, label = decode(orjson.dumps(obj))
    assert (event_id, ts, label) == ("e1", T, 1.0)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"label": "yes"}, Reason.WRONG_TYPE),
        ({"label": None}, Reason.MISSING_FIELD),
        ({"event_id": ""}, Reason.MISSING_FIELD),
        ({"ts": "2026-01-01T00:00:00"}, Reason.WRONG_TYPE),
        ({"features": {"a": [1, 2]}}, Reason.WRONG_TYPE),
        ({"schema_version": 2}, Reason.UNSUPPORTED_SCHEMA),
    ],
)
def test_bad_records_raise_with_a_reason(change: dict[str, object], reason: Reason) -> None:
    obj = orjson.loads(Example("e1", "u", T, {"a": 1}, 1.0).to_json())
    obj.update(change)
    with pytest.raises(RecordError) as err:
        decode(orjson.dumps(obj))
    assert err.value.reason is reason


def test_garbage_is_malformed_json() -> None:
    with pytest.raises(RecordError) as err:
        decode(b"{nope")
    assert err.value.reason is Reason.MALFORMED_JSON
    with pytest.raises(RecordError):
        decode(None)


@pytest.mark.parametrize(
    "ts", ["9999-12-31T23:59:59-10:00", "0001-01-01T00:00:00+05:00", "9500-01-01T00:00:00Z"]
)
def test_the_fast_path_rejects_what_the_contract_rejects(ts: str) -> None:
    obj = orjson.loads(Example("e", "u", T, {"a": 1}, 1.0).to_json())
    with pytest.raises(RecordError) as info:
        decode(orjson.dumps({**obj, "ts": ts}))
    assert info.value.reason is Reason.OUT_OF_RANGE
