from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopline.contracts import (
    MAX_DEPTH,
    TS_MAX,
    TS_MIN,
    CheckpointManifest,
    Command,
    CommandKind,
    Event,
    Example,
    Label,
    Prediction,
    Served,
    Window,
    parse_ts,
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

served = st.builds(
    Served,
    entity=st.none() | features,
    read_at=st.none() | aware,
    versions=st.lists(ids, max_size=3).map(tuple),
)
events = st.builds(
    Event,
    event_id=ids,
    entity_id=ids,
    ts=aware,
    features=features,
    source=st.text(max_size=10),
    served=st.none() | served,
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


DECODERS: tuple[Any, ...] = (Event, Label, Example, Command, Prediction, CheckpointManifest)


def decodes_or_rejects(cls: Any, raw: object) -> object | None:
    """The decoded record, or None if rejected: a RecordError with a reason, nothing else.

    What decodes must encode again and decode to the same record, so every reader
    (the CLI printing JSON, a worker re-publishing) can handle whatever got through.
    """
    try:
        record = cls.from_json(raw)
    except RecordError as exc:
        assert isinstance(exc.reason, Reason)
        return None
    assert cls.from_json(record.to_json()) == record
    return record


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_record_errors(raw: bytes) -> None:
    for cls in DECODERS:
        decodes_or_rejects(cls, raw)


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
    for cls in DECODERS:
        decodes_or_rejects(cls, raw)


# Timestamps around every edge: datetime's own range with the widest offsets, the
# contract's bounds, odd spellings, and values of the wrong type.
offsets = st.builds(
    timezone, st.timedeltas(-timedelta(hours=23, minutes=59), timedelta(hours=23, minutes=59))
)
any_instant = st.datetimes(timezones=offsets).map(datetime.isoformat)
EDGE_TS = [
    "9999-12-31T23:59:59-10:00",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59.999999-23:59",
    "0001-01-01T00:00:00+23:59",
    datetime.max.replace(tzinfo=UTC).isoformat(),
    datetime.min.replace(tzinfo=UTC).isoformat(),
    TS_MAX.isoformat(),
    (TS_MAX - timedelta(microseconds=1)).isoformat(),
    TS_MIN.isoformat(),
    (TS_MIN - timedelta(microseconds=1)).isoformat(),
    "1970-01-01T00:00:00+01:00",
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00",
    "2026-01-01",
    "2026-13-01T00:00:00Z",
    "2026-01-01T00:00:00+24:00",
    "2026-01-01T00:00:00\u0000Z",
    "",
]
edge_ts = st.one_of(
    st.sampled_from(EDGE_TS),
    any_instant,
    st.text(max_size=40),
    st.integers(),
    st.floats(),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)


@given(st.one_of(edge_ts, st.binary(max_size=10), st.dictionaries(st.text(), st.text())))
def test_parse_ts_returns_an_instant_in_range_or_raises_record_error(value: object) -> None:
    try:
        ts = parse_ts(value)
    except RecordError as exc:
        assert isinstance(exc.reason, Reason)
        return
    assert ts.tzinfo is UTC
    assert TS_MIN <= ts < TS_MAX


@pytest.mark.parametrize("text", EDGE_TS[:6])
def test_parse_ts_rejects_the_edges_of_datetime(text: str) -> None:
    with pytest.raises(RecordError) as info:
        parse_ts(text)
    assert info.value.reason is Reason.OUT_OF_RANGE


def test_parse_ts_keeps_the_bounds_half_open() -> None:
    assert parse_ts(TS_MIN.isoformat()) == TS_MIN
    assert parse_ts("1970-01-01T01:00:00+01:00") == TS_MIN
    with pytest.raises(RecordError):
        parse_ts(TS_MAX.isoformat())


# A valid record of each contract, as JSON: mutations of it reach past the first checks.
NOW = datetime(2026, 1, 1, tzinfo=UTC)
VALID: dict[Any, dict[str, Any]] = {
    cls: orjson.loads(record.to_json())
    for cls, record in (
        (Event, Event("e", "u", NOW, {"a": 1}, "s", Served({"n": 2}, NOW, ("ck",)))),
        (Label, Label("e", "u", NOW, 1.0)),
        (Example, Example("e", "u", NOW, {"a": 1}, 1.0, True, NOW, ("a",))),
        (
            Command,
            Command("c", CommandKind.PAUSE, "*", NOW, "op", "r", {"start": "x"}, {"k": [1]}),
        ),
        (Prediction, Prediction("e", "u", "v1", 0.5, NOW, False, 1.0)),
        (
            CheckpointManifest,
            CheckpointManifest(
                "c",
                None,
                "m",
                1,
                "h",
                {0: 5},
                NOW,
                NOW,
                5,
                0,
                (Window(NOW, NOW + timedelta(hours=1)),),
                {"logloss": 0.5},
                "sha",
                NOW,
                "l",
                "s",
            ),
        ),
    )
}
odd_values = st.one_of(
    json_values,
    edge_ts,
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([2**64, -(2**63) - 1, 10**30, 10**400, 1e308, 5e-324, float("nan")]),
    st.lists(st.dictionaries(st.sampled_from(["start", "end"]), edge_ts), max_size=2),
    st.dictionaries(st.text(max_size=4), edge_ts | json_values, max_size=3),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(DECODERS), st.data())
def test_mutated_records_decode_or_raise_record_errors(cls: Any, data: st.DataObject) -> None:
    obj = dict(VALID[cls])
    for name in data.draw(st.lists(st.sampled_from(sorted(obj)), max_size=4, unique=True)):
        if data.draw(st.booleans()):
            del obj[name]
        else:
            obj[name] = data.draw(odd_values)
    # The standard library writes what orjson will not: integers past 64 bits, NaN.
    raw = json.dumps(obj, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass")
    decodes_or_rejects(cls, raw)


@given(st.sampled_from(DECODERS), st.binary(min_size=1, max_size=8), st.integers(0, 200))
def test_invalid_utf8_anywhere_is_malformed(cls: Any, junk: bytes, at: int) -> None:
    raw = orjson.dumps(VALID[cls])
    at = min(at, len(raw))
    decodes_or_rejects(cls, raw[:at] + b"\xff" + junk + raw[at:])


@pytest.mark.parametrize("cls", DECODERS)
@pytest.mark.parametrize(
    "raw",
    [
        None,
        42,
        b"",
        b"null",
        b"[]",
        b'"text"',
        b"{}",
        b'{"schema_version": 1.0}',
        b'{"schema_version": true}',
        b'{"schema_version": 18446744073709551615}',
        b'{"schema_version": 1, "ts": NaN}',
        b'{"schema_version": 1, "label": Infinity}',
        b'{"schema_version": 1, "label": 1e400}',
        b'{"\xff\xfe": 1, "schema_version": 1}',
        b'{"schema_version": 1, "event_id": "\xc3\x28"}',
        b"[" * 2000 + b"]" * 2000,
        b'{"a":' * 1100 + b"1" + b"}" * 1100,
        '{"schema_version": 1, "event_id": "\ud800"}',
        b"\xef\xbb\xbf{}",
    ],
)
def test_hostile_inputs_are_record_errors(cls: Any, raw: object) -> None:
    assert decodes_or_rejects(cls, raw) is None


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


@pytest.mark.parametrize("name", ["args", "evidence"])
def test_command_free_form_fields_nest_within_bounds(name: str) -> None:
    ok = {**VALID[Command], name: {"deep": _nested(MAX_DEPTH - 1)}}
    assert decodes_or_rejects(Command, orjson.dumps(ok)) is not None
    too_deep = {**VALID[Command], name: {"deep": _nested(300)}}
    with pytest.raises(RecordError) as info:
        Command.from_json(json.dumps(too_deep))
    assert info.value.reason is Reason.OUT_OF_RANGE


@pytest.mark.parametrize("cls", [Event, Label, Example, Command, Prediction])
def test_edge_timestamps_are_out_of_range(cls: Any) -> None:
    field = "issued_at" if cls is Command else "ts"
    for text in EDGE_TS[:6]:
        with pytest.raises(RecordError) as info:
            cls.from_json(orjson.dumps({**VALID[cls], field: text}))
        assert info.value.reason is Reason.OUT_OF_RANGE


def test_huge_numbers() -> None:
    as_float = orjson.dumps(VALID[Label]).replace(b'"label":1.0', b'"label":' + b"9" * 300)
    assert Label.from_json(as_float).label == float("9" * 300)
    past_double = orjson.dumps(VALID[Label]).replace(b'"label":1.0', b'"label":' + b"9" * 400)
    assert _reason(past_double, Label) is Reason.MALFORMED_JSON


def _reason(raw: bytes | str, cls: Any = Event) -> Reason:
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


def test_a_served_event_keeps_what_serving_read_and_stays_readable_without_it() -> None:
    raw = _with(
        served={
            "entity": {"n": 2, "r": None},
            "read_at": "2026-01-01T00:00:01Z",
            "versions": ["ck"],
        }
    )
    ev = Event.from_json(raw)
    assert ev.served == Served({"n": 2, "r": None}, NOW + timedelta(seconds=1), ("ck",))
    # A reader that knows nothing of ``served`` (it predates it) reads the same event.
    old = {k: v for k, v in orjson.loads(raw).items() if k != "served"}
    assert Event.from_json(orjson.dumps(old)) == replace(ev, served=None)
    assert Event.from_json(_with(served=None)).served is None
    assert Event.from_json(_with(served={"versions": ["ck"]})).served == Served(None, None, ("ck",))


def test_a_malformed_served_part_is_rejected_with_a_reason() -> None:
    assert _reason(_with(served=[1])) == Reason.WRONG_TYPE
    assert _reason(_with(served={"entity": {"n": [1]}})) == Reason.WRONG_TYPE
    assert _reason(_with(served={"entity": {}, "versions": "ck"})) == Reason.WRONG_TYPE
    assert _reason(_with(served={"entity": {}, "versions": [""]})) == Reason.WRONG_TYPE
    assert _reason(_with(served={"entity": {}, "read_at": "soon"})) == Reason.WRONG_TYPE
