"""Hostile record values for every topic: each one is a record no decoder may accept.

Most are near misses — a record of one of the wire types (events, labels, examples,
predictions, control commands), current schema version included, with one defect
that makes it invalid for every type at once, amid noise that alone would not: a
broken identity, an edge or impossible timestamp, invalid UTF-8, a truncation, a
wrong schema version. Near misses reach the field checks that random bytes never
get past. The rest are random bytes and a fixed set of extremes (huge, deeply
nested, NaN/inf literals).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from typing import Any

TOPICS = ("events", "labels", "examples", "predictions", "control")

EDGE_TS: tuple[Any, ...] = (
    "9999-12-31T23:59:59-10:00",
    "0001-01-01T00:00:00+14:00",
    "2024-02-30T25:61:61Z",
    "10000-01-01T00:00:00Z",
    "2024-01-01T00:00:00",  # no timezone
    "",
    "NaN",
    "now",
    1e308,
    -1,
    2**70,
    None,
    [],
)
BAD_IDS: tuple[Any, ...] = ("", None, 0, 2**70, 1.5, [], {}, True)


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"a": [value]}
    return value


def _dumps(obj: Any) -> bytes:
    try:
        return json.dumps(obj, allow_nan=True).encode()
    except RecursionError:
        return b"{}"


def _template(rng: random.Random) -> dict[str, Any]:
    """A valid record of every wire type at once (each decoder ignores the others' fields)."""
    ts = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z"
    return {
        "schema_version": 1,
        "event_id": f"fuzz-{rng.getrandbits(48):x}",
        "entity_id": f"u{rng.randint(0, 50)}",
        "ts": ts,
        "features": {"price": 9.5, "hour": 3, "device": "mobile", "category": "wool"},
        "label": rng.choice([0, 1]),
        "model_version": "m-1",
        "score": 0.5,
        "fallback": False,
        "command_id": f"c{rng.getrandbits(32):x}",
        "kind": "pause",
        "scope": "*",
        "issued_at": ts,
        "issued_by": "fuzz",
    }


def _noise(rng: random.Random, obj: dict[str, Any]) -> None:
    """Edits that leave the record as (in)valid as it was: extra fields, odd values."""
    extra = rng.choice([2**100, -(2**63), 1e308, "\u202e\U0001f600", _nested(20), [None] * 50])
    obj[f"x{rng.randint(0, 9)}"] = extra


def _break_identity(rng: random.Random, obj: dict[str, Any]) -> bytes:
    for name in ("event_id", "command_id"):
        bad = rng.choice(BAD_IDS)
        if bad is None and rng.random() < 0.5:
            obj.pop(name)
        else:
            obj[name] = bad
    return _dumps(obj)


def _break_time(rng: random.Random, obj: dict[str, Any]) -> bytes:
    obj["ts"] = obj["issued_at"] = rng.choice(EDGE_TS)
    return _dumps(obj)


def _break_version(rng: random.Random, obj: dict[str, Any]) -> bytes:
    if rng.random() < 0.3:
        obj.pop("schema_version")
    else:
        obj["schema_version"] = rng.choice([0, 2, 999, "1", 1.0, None, True])
    return _dumps(obj)


def _break_encoding(rng: random.Random, obj: dict[str, Any]) -> bytes:
    raw = _dumps(obj)
    bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
    at = raw.index(b'"', raw.index(b":")) + 1  # inside the first string after a value
    return raw[:at] + bad + raw[at:]


def _break_syntax(rng: random.Random, obj: dict[str, Any]) -> bytes:
    raw = _dumps(obj)
    if rng.random() < 0.5:
        return raw[: rng.randint(1, len(raw) - 1)]  # no proper prefix of an object parses
    return raw.replace(b'"score": 0.5', b'"score": NaN').replace(b"}", b",}", 1)


DEFECTS: tuple[Callable[[random.Random, dict[str, Any]], bytes], ...] = (
    _break_identity,
    _break_time,
    _break_version,
    _break_encoding,
    _break_syntax,
)

EXTREMES: tuple[bytes, ...] = (
    b"",
    b"null",
    b"[]",
    b'"a string"',
    b"{",
    b"\xff\xfe\xfa",
    b'{"event_id": NaN, "ts": Infinity}',
    b'{"x": "' + b"y" * 200_000 + b'"}',
    b'{"deep": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    _dumps({"schema_version": 1, "deep": _nested(2000)}),
)


def near_miss(rng: random.Random) -> bytes:
    obj = _template(rng)
    for _ in range(rng.randint(0, 2)):
        _noise(rng, obj)
    return rng.choice(DEFECTS)(rng, obj)


def poison_values(rng: random.Random, count: int) -> list[bytes]:
    """``count`` hostile values: the extremes first, then near misses and random bytes."""
    out = list(EXTREMES[:count])
    while len(out) < count:
        out.append(near_miss(rng) if rng.random() < 0.7 else os.urandom(rng.randint(1, 300)))
    return out
