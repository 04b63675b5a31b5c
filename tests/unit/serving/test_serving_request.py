from __future__ import annotations

import pytest

from loopline.spec import DEFAULT_SPEC, load_spec, parse_spec
from serving.fallback import Fallback
from serving.request import MAX_BODY_BYTES, BadRequest, parse


def test_a_good_body_parses() -> None:
    req = parse(
        b'{"entity_id": "u1", "features": {"price": 3, "device": "mobile"}, "event_id": "e"}'
    )
    assert (req.entity_id, req.event_id, req.features["price"]) == ("u1", "e", 3)
    assert parse(b'{"entity_id": "u1"}').features == {}


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{nope", 400, "malformed_json"),
        (b"[1, 2]", 422, "wrong_type"),
        (b'{"features": {}}', 422, "missing_field"),
        (b'{"entity_id": 7}', 422, "wrong_type"),
        (b'{"entity_id": "u", "features": [1]}', 422, "wrong_type"),
        (b'{"entity_id": "u", "features": {"price": {"a": 1}}}', 422, "wrong_type"),
        (b'{"entity_id": "u", "extra": 1}', 422, "unknown_feature"),
        (b'{"entity_id": "' + b"u" * 300 + b'"}', 422, "too_large"),
        (b" " * (MAX_BODY_BYTES + 1), 413, "too_large"),
    ],
)
def test_bad_bodies_are_4xx_with_a_reason(body: bytes, status: int, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse(body)
    assert (caught.value.status, caught.value.reason) == (status, reason)
    assert caught.value.body()["detail"]


def test_fallback_looks_up_the_feature_or_answers_the_constant() -> None:
    spec = load_spec(DEFAULT_SPEC)
    fallback = Fallback(spec)
    assert fallback.score({"category": "alpaca"}) == 0.07
    assert fallback.score({"category": None}) == spec.fallback.value
    constant = parse_spec(spec.model_dump() | {"fallback": {"kind": "constant", "value": 2.5}})
    assert Fallback(constant).score({"category": "alpaca"}) == 2.5
