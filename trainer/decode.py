"""Decoding ``examples`` records fast, without giving up the contract's checks.

The common case (a well-formed Example) costs one ``orjson.loads`` and a handful of
type checks; anything unusual goes through :meth:`Example.from_json`, which either
decodes it or raises :class:`~loopline.errors.RecordError` with the reason.

>>> from datetime import UTC, datetime
>>> ex = Example("e1", "u1", datetime(2026, 1, 1, tzinfo=UTC), {"a": 1}, 1.0)
>>> decode(ex.to_json())[0]
'e1'
"""

from __future__ import annotations

from datetime import datetime

import orjson

from loopline.contracts import MAX_RECORD_BYTES, SCHEMA_VERSION, TS_MAX, TS_MIN, Example, Features

_NUMBER = (int, float)
_VALUE_TYPES = frozenset((int, float, str, bool, type(None)))

Decoded = tuple[str, datetime, Features, float]


def decode(raw: bytes | None) -> Decoded:
    """``(event_id, ts, features, label)`` of one Example; RecordError if it is not one."""
    try:
        obj = orjson.loads(raw or b"")
        event_id, ts_text = obj["event_id"], obj["ts"]
        features, label, version = obj["features"], obj["label"], obj["schema_version"]
        entity_id = obj["entity_id"]
        if (
            type(version) is int
            and version == SCHEMA_VERSION
            and len(raw or b"") <= MAX_RECORD_BYTES
            and type(entity_id) is str
            and entity_id
            and type(event_id) is str
            and event_id
            and type(ts_text) is str
            and type(features) is dict
            and type(label) in _NUMBER
            and _VALUE_TYPES.issuperset(map(type, features.values()))
        ):
            ts = datetime.fromisoformat(ts_text)
            if ts.tzinfo is not None and TS_MIN <= ts < TS_MAX:
                return event_id, ts, features, float(label)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        pass
    example = Example.from_json(raw or b"")
    return example.event_id, example.ts, example.features, example.label
