"""The trainer's fast decoder accepts exactly what the Example contract accepts."""

from __future__ import annotations

import orjson
import pytest

from loopline.errors import RecordError
from trainer.decode import decode

GOOD = {
    "event_id": "e",
    "entity_id": "u",
    "ts": "2026-01-01T00:00:00+00:00",
    "features": {"a": 1},
    "label": 1.0,
    "schema_version": 1,
}


@pytest.mark.parametrize(
    "change",
    [
        {"schema_version": True},
        {"entity_id": None},
        {"entity_id": ""},
        {"ts": "2026-01-01T00:00:00"},
    ],
)
def test_what_the_contract_refuses_the_fast_path_refuses(change: dict[str, object]) -> None:
    with pytest.raises(RecordError):
        decode(orjson.dumps({**GOOD, **change}))


def test_a_good_example_decodes() -> None:
    event_id, ts, features, label = decode(orjson.dumps(GOOD))
    assert (event_id, features, label) == ("e", {"a": 1}, 1.0)
    assert ts.tzinfo is not None
