"""Wire contracts: the JSON records on Loopline's topics.

Every record carries ``schema_version``. Decoding never trusts its input: a bad record
raises :class:`~loopline.errors.RecordError` with a stable reason code, which is what
the streams put on ``deadletter``.

>>> ev = Event(event_id="e1", entity_id="u1", ts=datetime(2026, 1, 1, tzinfo=UTC),
...            features={"price": 12.5}, source="shop")
>>> Event.from_json(ev.to_json()) == ev
True
>>> Event.from_json(b"{not json")
Traceback (most recent call last):
...
loopline.errors.RecordError: malformed_json: ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self

import orjson

from loopline.errors import Reason, RecordError

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 64 * 1024
#: The instants a record may name. Far enough inside what ``datetime`` can hold that
#: converting an offset to UTC, or adding any horizon or window length, cannot overflow;
#: nothing a record describes happened before the Unix epoch (Kafka's timestamps start there).
TS_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TS_MAX = datetime(9000, 1, 1, tzinfo=UTC)
#: How deeply free-form fields (a Command's ``args`` and ``evidence``) may nest: well
#: under what orjson can encode again (254 levels), so what decodes re-encodes.
MAX_DEPTH = 32

FeatureValue = float | int | str | bool | None
Features = dict[str, FeatureValue]
_JSON_OPTS = orjson.OPT_NON_STR_KEYS


def utcnow() -> datetime:
    return datetime.now(UTC)


def load_object(raw: bytes | str, max_bytes: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    """Parse one JSON object, rejecting oversized, malformed and non-object input."""
    if not isinstance(raw, bytes | bytearray | memoryview | str):
        raise RecordError(Reason.WRONG_TYPE, f"expected bytes, got {type(raw).__name__}")
    if len(raw) > max_bytes:
        raise RecordError(Reason.TOO_LARGE, f"{len(raw)} bytes > limit {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8 and nesting past 1024
        raise RecordError(Reason.MALFORMED_JSON, str(exc)) from None
    if not isinstance(obj, dict):
        raise RecordError(Reason.WRONG_TYPE, f"expected a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version", _MISSING)
    if version is _MISSING:
        raise RecordError(Reason.MISSING_FIELD, "schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise RecordError(Reason.UNSUPPORTED_SCHEMA, f"schema_version {version!r} (supported: 1)")
    return obj


_MISSING = object()


def _get(obj: Mapping[str, Any], name: str) -> Any:
    value = obj.get(name, _MISSING)
    if value is _MISSING or value is None:
        raise RecordError(Reason.MISSING_FIELD, name)
    return value


def _str(obj: Mapping[str, Any], name: str) -> str:
    value = _get(obj, name)
    if not isinstance(value, str):
        raise RecordError(Reason.WRONG_TYPE, f"{name} must be a string")
    if not value:
        raise RecordError(Reason.MISSING_FIELD, f"{name} is empty")
    return value


def _opt_str(obj: Mapping[str, Any], name: str) -> str | None:
    return None if obj.get(name) is None else _str(obj, name)


def _number(obj: Mapping[str, Any], name: str) -> float:
    return _as_number(_get(obj, name), name)


def _as_number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, int | float):
        raise RecordError(Reason.WRONG_TYPE, f"{name} must be a number")
    try:
        number = float(value)
    except OverflowError:  # an int past what a float holds
        raise RecordError(Reason.OUT_OF_RANGE, f"{name} is too large") from None
    if not math.isfinite(number):
        raise RecordError(Reason.OUT_OF_RANGE, f"{name} is not finite")
    return number


def _int(obj: Mapping[str, Any], name: str) -> int:
    value = _get(obj, name)
    if type(value) is not int:
        raise RecordError(Reason.WRONG_TYPE, f"{name} must be an integer")
    return value


def _bool(obj: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = obj.get(name, default)
    if not isinstance(value, bool):
        raise RecordError(Reason.WRONG_TYPE, f"{name} must be true or false")
    return value


def parse_ts(value: Any, name: str = "ts") -> datetime:
    """An RFC 3339 timestamp with an offset in ``[TS_MIN, TS_MAX)``, returned in UTC.

    Anything else raises :class:`RecordError`, and nothing but it:

    >>> parse_ts("9999-12-31T23:59:59-10:00")
    Traceback (most recent call last):
    ...
    loopline.errors.RecordError: out_of_range: ts 9999-12-31T23:59:59-10:00 is not in [1970-01-01T00:00:00+00:00, 9000-01-01T00:00:00+00:00)
    """
    if not isinstance(value, str):
        raise RecordError(Reason.WRONG_TYPE, f"{name} must be an RFC 3339 string")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise RecordError(Reason.WRONG_TYPE, f"{name} is not an RFC 3339 timestamp") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise RecordError(Reason.WRONG_TYPE, f"{name} has no UTC offset")
    # Compared before converting: converting near datetime's edges overflows.
    if not TS_MIN <= ts < TS_MAX:
        raise RecordError(
            Reason.OUT_OF_RANGE,
            f"{name} {value[:40]} is not in [{TS_MIN.isoformat()}, {TS_MAX.isoformat()})",
        )
    return ts.astimezone(UTC)


def _ts(obj: Mapping[str, Any], name: str) -> datetime:
    return parse_ts(_get(obj, name), name)


def _opt_ts(obj: Mapping[str, Any], name: str) -> datetime | None:
    return None if obj.get(name) is None else _ts(obj, name)


def _dict(
    obj: Mapping[str, Any], name: str, default: dict[str, Any] | None = None
) -> dict[str, Any]:
    value = obj.get(name, default)
    if value is None:
        raise RecordError(Reason.MISSING_FIELD, name)
    if not isinstance(value, dict):
        raise RecordError(Reason.WRONG_TYPE, f"{name} must be an object")
    return value


def _free_form(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A JSON object kept as it is, nested at most ``MAX_DEPTH`` levels."""
    value = _dict(obj, name, {})
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
        if not level:
            return value
    raise RecordError(Reason.OUT_OF_RANGE, f"{name} nests deeper than {MAX_DEPTH} levels")


def _features(obj: Mapping[str, Any], name: str = "features", where: str = "") -> Features:
    features = _dict(obj, name)
    for key, value in features.items():
        if value is not None and not isinstance(value, int | float | str | bool):
            raise RecordError(
                Reason.WRONG_TYPE,
                f"{where + ': ' if where else ''}feature {key!r} must be a number, string, bool or null",
            )
    return features


class _Record:
    """JSON encoding shared by every contract (orjson serialises dataclasses natively)."""

    __slots__ = ()

    def to_json(self) -> bytes:
        return orjson.dumps(self, option=_JSON_OPTS)


@dataclass(frozen=True, slots=True)
class Served(_Record):
    """What serving used when it scored an event: the example is built from it.

    ``entity`` holds the entity's online features as serving read them at ``read_at``
    (every entity feature of the spec by name, None where the store held none), or is
    None when serving answered without reading them (a kill switch, Redis away, a
    model skipped for latency): then the streams compute them, as for an event nobody
    scored. ``versions`` names what scored it (checkpoint ids, or ``fallback``).

    >>> s = Served(entity={"views_1h": 3}, read_at=datetime(2026, 1, 1, tzinfo=UTC),
    ...            versions=("ck1",))
    >>> Served.from_object(orjson.loads(s.to_json())) == s
    True
    """

    entity: Features | None
    read_at: datetime | None = None
    versions: tuple[str, ...] = ()

    @classmethod
    def from_object(cls, obj: Any) -> Self:
        if not isinstance(obj, dict):
            raise RecordError(Reason.WRONG_TYPE, "served must be an object")
        versions = obj.get("versions", [])
        if not isinstance(versions, list) or not all(isinstance(v, str) and v for v in versions):
            raise RecordError(Reason.WRONG_TYPE, "served.versions must be a list of names")
        entity = obj.get("entity")
        return cls(
            entity=None if entity is None else _features(obj, "entity", "served.entity"),
            read_at=_opt_ts(obj, "read_at"),
            versions=tuple(versions),
        )


@dataclass(frozen=True, slots=True)
class Event(_Record):
    """Something happened to an entity; the app may label it later by ``event_id``.

    ``served`` is set on the events serving logs for the requests it scored (see
    :class:`Served`); events published apart from serving (``Publisher.event``,
    backfills) have none. Decoders that predate it ignore it.
    """

    event_id: str
    entity_id: str
    ts: datetime
    features: Features
    source: str = ""
    served: Served | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, raw: bytes | str, max_bytes: int = MAX_RECORD_BYTES) -> Self:
        obj = load_object(raw, max_bytes)
        source = obj.get("source", "")
        if not isinstance(source, str):
            raise RecordError(Reason.WRONG_TYPE, "source must be a string")
        served = obj.get("served")
        return cls(
            event_id=_str(obj, "event_id"),
            entity_id=_str(obj, "entity_id"),
            ts=_ts(obj, "ts"),
            features=_features(obj),
            source=source,
            served=None if served is None else Served.from_object(served),
        )


@dataclass(frozen=True, slots=True)
class Label(_Record):
    """The outcome of an earlier event."""

    event_id: str
    entity_id: str
    ts: datetime
    label: float
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, raw: bytes | str, max_bytes: int = MAX_RECORD_BYTES) -> Self:
        obj = load_object(raw, max_bytes)
        return cls(
            event_id=_str(obj, "event_id"),
            entity_id=_str(obj, "entity_id"),
            ts=_ts(obj, "ts"),
            label=_number(obj, "label"),
        )


@dataclass(frozen=True, slots=True)
class Example(_Record):
    """A training example: features as they were at event time, joined with a label.

    ``label_observed`` is false when the spec's default for a missing label applied.
    """

    event_id: str
    entity_id: str
    ts: datetime
    features: Features
    label: float
    label_observed: bool = True
    label_ts: datetime | None = None
    imputed: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, raw: bytes | str, max_bytes: int = MAX_RECORD_BYTES) -> Self:
        obj = load_object(raw, max_bytes)
        imputed = obj.get("imputed", [])
        if not isinstance(imputed, list) or not all(isinstance(n, str) for n in imputed):
            raise RecordError(Reason.WRONG_TYPE, "imputed must be a list of feature names")
        return cls(
            event_id=_str(obj, "event_id"),
            entity_id=_str(obj, "entity_id"),
            ts=_ts(obj, "ts"),
            features=_features(obj),
            label=_number(obj, "label"),
            label_observed=_bool(obj, "label_observed", True),
            label_ts=_opt_ts(obj, "label_ts"),
            imputed=tuple(imputed),
        )


class CommandKind(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    MARK_ANOMALOUS = "mark_anomalous"
    CLEAR_ANOMALOUS = "clear_anomalous"
    ROLLBACK = "rollback"
    PIN = "pin"
    PAUSE_RAMP = "pause_ramp"
    RESUME_RAMP = "resume_ramp"
    ABORT_RAMP = "abort_ramp"
    KILL_SWITCH_ON = "kill_switch_on"
    KILL_SWITCH_OFF = "kill_switch_off"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class Command(_Record):
    """An instruction on ``control``. ``scope`` is a model name, or ``*`` for all.

    ``args`` holds what the kind needs (a window's ``start``/``end``, a checkpoint id);
    ``evidence`` says why, e.g. what the data-health monitor saw move. ``signature`` is
    the Ed25519 signature (base64) of every other field by the operator key that
    ``issued_by`` names (see :mod:`loopline.signing.commands`); empty when unsigned.
    """

    command_id: str
    kind: CommandKind
    scope: str
    issued_at: datetime
    issued_by: str
    reason: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    signature: str = ""
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, raw: bytes | str, max_bytes: int = MAX_RECORD_BYTES) -> Self:
        obj = load_object(raw, max_bytes)
        kind = _str(obj, "kind")
        try:
            command_kind = CommandKind(kind)
        except ValueError:
            raise RecordError(Reason.OUT_OF_RANGE, f"unknown command kind {kind!r}") from None
        reason = obj.get("reason", "")
        if not isinstance(reason, str):
            raise RecordError(Reason.WRONG_TYPE, "reason must be a string")
        signature = obj.get("signature") or ""
        if not isinstance(signature, str):
            raise RecordError(Reason.WRONG_TYPE, "signature must be a string")
        return cls(
            command_id=_str(obj, "command_id"),
            kind=command_kind,
            scope=_str(obj, "scope"),
            issued_at=_ts(obj, "issued_at"),
            issued_by=_str(obj, "issued_by"),
            reason=reason,
            args=_free_form(obj, "args"),
            evidence=_free_form(obj, "evidence"),
            signature=signature,
        )


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open event-time interval ``[start, end)``."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} is not after start {self.start}")

    def __contains__(self, ts: datetime) -> bool:
        return self.start <= ts < self.end


@dataclass(frozen=True, slots=True)
class CheckpointManifest(_Record):
    """What a checkpoint holds, how it was made and how to verify it.

    ``signature`` is the HMAC-SHA256 of every other field (see ``loopline.checkpoints``).
    """

    checkpoint_id: str
    parent_id: str | None
    model_name: str
    spec_version: int
    schema_hash: str
    offsets: dict[int, int]
    event_time_min: datetime | None
    event_time_max: datetime | None
    examples_seen: int
    examples_excluded: int
    excluded_windows: tuple[Window, ...]
    metrics: dict[str, float | None]
    blob_sha256: str
    created_at: datetime
    lineage: str
    signature: str = ""
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, raw: bytes | str, max_bytes: int = 4 * MAX_RECORD_BYTES) -> Self:
        obj = load_object(raw, max_bytes)
        offsets = {}
        for p, o in _dict(obj, "offsets").items():
            if not (p.isascii() and p.isdigit()) or type(o) is not int:
                raise RecordError(Reason.WRONG_TYPE, f"offsets: {p!r} is not partition: offset")
            offsets[int(p)] = o
        windows = obj.get("excluded_windows", [])
        if not isinstance(windows, list) or not all(isinstance(w, dict) for w in windows):
            raise RecordError(Reason.WRONG_TYPE, "excluded_windows must be a list of objects")
        try:
            excluded = tuple(Window(_ts(w, "start"), _ts(w, "end")) for w in windows)
        except ValueError as exc:  # an empty window
            raise RecordError(Reason.OUT_OF_RANGE, f"excluded window: {exc}") from None
        metrics: dict[str, float | None] = {}
        for k, v in _dict(obj, "metrics", {}).items():
            metrics[k] = None if v is None else _as_number(v, f"metric {k!r}")
        signature = obj.get("signature") or ""
        if not isinstance(signature, str):
            raise RecordError(Reason.WRONG_TYPE, "signature must be a string")
        return cls(
            checkpoint_id=_str(obj, "checkpoint_id"),
            parent_id=_opt_str(obj, "parent_id"),
            model_name=_str(obj, "model_name"),
            spec_version=_int(obj, "spec_version"),
            schema_hash=_str(obj, "schema_hash"),
            offsets=offsets,
            event_time_min=_opt_ts(obj, "event_time_min"),
            event_time_max=_opt_ts(obj, "event_time_max"),
            examples_seen=_int(obj, "examples_seen"),
            examples_excluded=_int(obj, "examples_excluded"),
            excluded_windows=excluded,
            metrics=metrics,
            blob_sha256=_str(obj, "blob_sha256"),
            created_at=_ts(obj, "created_at"),
            lineage=_str(obj, "lineage"),
            signature=signature,
        )


@dataclass(frozen=True, slots=True)
class Prediction(_Record):
    """One answer from serving, logged so online metrics can join it with its label."""

    event_id: str
    entity_id: str
    model_version: str
    score: float
    ts: datetime
    fallback: bool = False
    latency_ms: float = 0.0
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, raw: bytes | str, max_bytes: int = MAX_RECORD_BYTES) -> Self:
        obj = load_object(raw, max_bytes)
        return cls(
            event_id=_str(obj, "event_id"),
            entity_id=_str(obj, "entity_id"),
            model_version=_str(obj, "model_version"),
            score=_number(obj, "score"),
            ts=_ts(obj, "ts"),
            fallback=_bool(obj, "fallback"),
            latency_ms=_number(obj, "latency_ms") if "latency_ms" in obj else 0.0,
        )
