"""Reading and parsing a ``/predict`` body: every way it can be wrong is a 4xx with the reason.

:func:`read_body` refuses a body over :data:`MAX_BODY_BYTES` before holding it: at
once when its ``Content-Length`` says so, else as soon as the bytes streamed in pass
the limit, so a caller cannot make serving buffer more than that, chunked or not.

>>> parse(b'{"entity_id": "u1", "features": {"price": 3}}').entity_id
'u1'
>>> parse(b'{"features": {}}')
Traceback (most recent call last):
...
serving.request.BadRequest: 422 missing_field: entity_id must be a non-empty string
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass

import orjson

from loopline.contracts import Features
from loopline.errors import Reason

MAX_BODY_BYTES = 64 * 1024
MAX_ID_CHARS = 256
FIELDS = frozenset({"entity_id", "features", "event_id", "log"})


class BadRequest(Exception):
    def __init__(self, status: int, reason: Reason | str, detail: str) -> None:
        self.status = status
        self.reason = str(reason)
        self.detail = detail
        super().__init__(f"{status} {self.reason}: {detail}")

    def body(self) -> dict[str, str]:
        return {"reason": self.reason, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class PredictRequest:
    entity_id: str
    features: Features
    event_id: str | None
    #: False: answer only, publish no event (a probe, a what-if question).
    log: bool = True


def _id(obj: dict[str, object], name: str, required: bool) -> str | None:
    value = obj.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(
            422,
            Reason.MISSING_FIELD if not value else Reason.WRONG_TYPE,
            f"{name} must be a non-empty string",
        )
    if len(value) > MAX_ID_CHARS:
        raise BadRequest(422, Reason.TOO_LARGE, f"{name} is longer than {MAX_ID_CHARS} characters")
    return value


async def read_body(
    chunks: AsyncIterable[bytes], content_length: str | None, limit: int = MAX_BODY_BYTES
) -> bytes:
    """The whole body, or a 413 raised without reading past ``limit`` bytes."""
    if content_length is not None:
        if not content_length.isdigit():
            raise BadRequest(400, "bad_content_length", f"Content-Length {content_length!r}")
        if int(content_length) > limit:
            raise BadRequest(413, Reason.TOO_LARGE, f"body of {content_length} bytes > {limit}")
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, Reason.TOO_LARGE, f"body of more than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def parse(raw: bytes) -> PredictRequest:
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(413, Reason.TOO_LARGE, f"body of {len(raw)} bytes > {MAX_BODY_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, Reason.MALFORMED_JSON, str(exc)) from None
    if not isinstance(obj, dict):
        raise BadRequest(422, Reason.WRONG_TYPE, "the body must be a JSON object")
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        raise BadRequest(
            422, Reason.UNKNOWN_FEATURE, f"unknown fields {unknown}; expected {sorted(FIELDS)}"
        )
    entity_id = _id(obj, "entity_id", required=True)
    assert entity_id is not None
    features = obj.get("features", {})
    if not isinstance(features, dict):
        raise BadRequest(422, Reason.WRONG_TYPE, "features must be an object")
    for name, value in features.items():
        if value is not None and not isinstance(value, int | float | str | bool):
            raise BadRequest(
                422, Reason.WRONG_TYPE, f"feature {name!r} must be a number, string, bool or null"
            )
    log = obj.get("log", True)
    if not isinstance(log, bool):
        raise BadRequest(422, Reason.WRONG_TYPE, "log must be true or false")
    return PredictRequest(entity_id, features, _id(obj, "event_id", required=False), log)
