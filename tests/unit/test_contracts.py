from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopline.contracts import (
    CheckpointManifest,
    Command,
    CommandKind,
    Event,
    Example,
    Label,
    Prediction,
    Window,
)
from loopline.errors import Reason, RecordError

ids = st.text(min_size=1, max_size=40)
aware = st.datetimes(
    # Hypothesis takes naive bounds and attaches the timezone itself.
    min_value=datetime.fromisoformat("2000-01-01"),
    max_value=datetime.fromisoformat("2100-01-01"),
    timezones=st.just(UTC),
)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), finite, st.text(max_size=20)
)
features = st.dictionaries(st.text(min_size=1, max_size=20), values, max_size=10)

events = st.builds(
    Event, event_id=ids, entity_id=ids, ts=aware, features=features, source=st.text(max_size=10)
)
labels = st.builds(Label, event_id=ids, entity_id=ids, ts=aware, label=finite)
examples = st.builds(
    Example,
    event_id=ids,
    entity_id=ids,
    ts=aware,
    features=features,
    label=finite,
    label_observed=st.booleans(),
    label_ts=st.none() | aware,
    imputed=st.lists(st.text(min_size=1, max_size=10), max_size=3).map(tuple),
)
commands = st.builds(
    Command,
    command_id=ids,
    kind=st.sampled_from(CommandKind),
    scope=ids,
    issued_at=aware,
    issued_by=ids,
    reason=st.text(max_size=20),
    args=st.dictionaries(
        st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5), max_size=3
    ),
)
predictions = st.builds(
    Prediction,
    event_id=ids,
    entity_id=ids,
    model_version=ids,
    score=finite,
    ts=aware,
    fallback=st.booleans(),
    latency_ms=finite,
)


def _window(start: datetime, hours: int) -> Window:
    return Window(start, start + timedelta(hours=hours))


manifests = st.builds(
    CheckpointManifest,
    checkpoint_id=ids,
    parent_id=st.none() | ids,
    model_name=ids,
    spec_version=st.integers(1, 100),
    schema_hash=ids,
    offsets=st.dictionaries(st.integers(0, 64), st.integers(0, 2**40), max_size=4),
    event_time_min=st.none() | aware,
    event_time_max=st.none() | aware,
    examples_seen=st.integers(0, 2**40),
    examples_excluded=st.integers(0, 2**40),
    excluded_windows=st.lists(st.builds(_window, aware, st.integers(1, 48)), max_size=3).map(tuple),
    metrics=st.dictionaries(st.text(min_size=1, max_size=8), st.none() | finite, max_size=3),
    blob_sha256=ids,
    created_at=aware,
    lineage=ids,
    signature=st.text(max_size=64),
)


@pytest.mark.parametrize(
    ("strategy", "cls"),
    [
        (events, Event),
        (labels, Label),
        (examples, Example),
        (commands, Command),
        (predictions, Prediction),
        (manifests, CheckpointManifest),
    ],
)
def test_round_trip(strategy: st.SearchStrategy[object], cls: type) -> None:
    @given(strategy)
    def check(record: object) -> None:
        assert cls.from_json(record.to_json()) == record  # type: ignore[attr-defined]

    check()


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_record_errors(raw: bytes) -> None:
    for cls in (Event, Label, Example, Command, Prediction, CheckpointManifest):
        try:
            cls.from_json(raw)
        except RecordError as exc:
            assert isinstance(exc.reason, Reason)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | finite | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(
            ["event_id", "entity_id", "ts", "features", "label", "schema_version", "x"]
        ),
        json_values,
    )
)
def test_random_json_objects_only_raise_record_errors(obj: dict[str, object]) -> None:
    raw = orjson.dumps(obj)
    for cls in (Event, Label, Example):
        try:
            cls.from_json(raw)
        except RecordError as exc:
            assert isinstance(exc.reason, Reason)


def _reason(raw: bytes | str, cls: type = Event) -> Reason:
    with pytest.raises(RecordError) as info:
        cls.from_json(raw)
    return info.value.reason


GOOD = {
    "event_id": "e",
    "entity_id": "u",
    "ts": "2026-01-01T00:00:00Z",
    "features": {},
    "schema_version": 1,
}


def _with(**changes: object) -> bytes:
    obj = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in obj.items() if v is not ...})


def test_reason_codes() -> None:
    assert _reason(b"{nope") == Reason.MALFORMED_JSON
    assert _reason(b"[1, 2]") == Reason.WRONG_TYPE
    assert _reason(_with(event_id=...)) == Reason.MISSING_FIELD
    assert _reason(_with(schema_version=...)) == Reason.MISSING_FIELD
    assert _reason(_with(schema_version=2)) == Reason.UNSUPPORTED_SCHEMA
    assert _reason(_with(entity_id=7)) == Reason.WRONG_TYPE
    assert _reason(_with(ts="yesterday")) == Reason.WRONG_TYPE
    assert _reason(_with(ts="2026-01-01T00:00:00")) == Reason.WRONG_TYPE  # no offset
    assert _reason(_with(features={"a": [1]})) == Reason.WRONG_TYPE
    assert _reason(b" " * (64 * 1024 + 1)) == Reason.TOO_LARGE
    assert _reason(_with(label="yes"), Label) == Reason.WRONG_TYPE


def test_timestamps_are_utc_aware() -> None:
    ev = Event.from_json(_with(ts="2026-01-01T02:00:00+02:00"))
    assert ev.ts == datetime(2026, 1, 1, tzinfo=UTC)
    assert ev.ts.tzinfo is UTC


def test_window_rejects_naive_and_empty() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(now.replace(tzinfo=None), now)
    with pytest.raises(ValueError, match="not after"):
        Window(now, now)
    window = Window(now, now + timedelta(hours=1))
    assert now in window
    assert now + timedelta(hours=1) not in window
