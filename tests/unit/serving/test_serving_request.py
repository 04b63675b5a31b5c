from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from loopline.spec import DEFAULT_SPEC, load_spec, parse_spec
from serving.fallback import Fallback
from serving.request import MAX_BODY_BYTES, BadRequest, parse, read_body


def test_a_good_body_parses() -> None:
    req = parse(
        b'{"entity_id": "u1", "features": {"price": 3, "device": "mobile"}, "event_id": "e"}'
    )
    assert (req.entity_id, req.event_id, req.features["price"]) == ("u1", "e", 3)
    assert parse(b'{"entity_id": "u1"}').features == {}
    assert parse(b'{"entity_id": "u1"}').log is True
    assert parse(b'{"entity_id": "u1", "log": false}').log is False


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
        (b'{"entity_id": "u", "log": "no"}', 422, "wrong_type"),
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


async def _chunks(read: list[int], count: int, size: int = 1024) -> AsyncIterator[bytes]:
    for _ in range(count):
        read.append(size)
        yield b" " * size


def test_a_body_is_read_whole_within_the_limit() -> None:
    read: list[int] = []
    raw = asyncio.run(read_body(_chunks(read, 4), None, limit=4096))
    assert raw == b" " * 4096
    assert asyncio.run(read_body(_chunks([], 4), "4096", limit=4096)) == raw


def test_a_declared_oversized_body_is_refused_before_any_of_it_is_read() -> None:
    read: list[int] = []
    with pytest.raises(BadRequest) as caught:
        asyncio.run(read_body(_chunks(read, 1000), "4097", limit=4096))
    assert (caught.value.status, caught.value.reason, read) == (413, "too_large", [])


@pytest.mark.parametrize("declared", [None, "10"])
def test_a_streamed_body_stops_being_read_past_the_limit(declared: str | None) -> None:
    """Chunked, or longer than its Content-Length said: counted as it comes."""
    read: list[int] = []
    with pytest.raises(BadRequest) as caught:
        asyncio.run(read_body(_chunks(read, 1000), declared, limit=4096))
    assert (caught.value.status, caught.value.reason) == (413, "too_large")
    assert sum(read) == 5 * 1024  # the chunk that passed the limit, no further


@pytest.mark.parametrize("declared", ["-1", "12a", ""])
def test_a_malformed_content_length_is_400(declared: str) -> None:
    with pytest.raises(BadRequest) as caught:
        asyncio.run(read_body(_chunks([], 1), declared))
    assert caught.value.status == 400
