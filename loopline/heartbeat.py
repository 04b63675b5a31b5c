"""Worker heartbeats: what each running worker says about itself, kept in Redis.

One key per worker instance, ``<prefix>worker:<name>``, holding a JSON object with
``at`` (when it was written) and what the worker reports: paused or not, its
position, the control commands it has applied (or refused, with why), its data-health
verdict. Keys expire after ``TTL_SECONDS``, so a worker that died disappears;
``loopline status`` shows one whose last beat is older than ``STALE_SECONDS`` as stale,
and operator commands wait here to see a command take effect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import redis

from loopline.contracts import parse_ts, utcnow
from loopline.errors import Reason, RecordError
from loopline.redis_client import redis_client
from loopline.settings import Settings

log = logging.getLogger(__name__)

TTL_SECONDS = 120
STALE_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    name: str
    at: datetime
    state: dict[str, Any]

    def age(self, now: datetime | None = None) -> float:
        return ((now or utcnow()) - self.at).total_seconds()

    @property
    def applied(self) -> set[str]:
        """Ids of the control commands this worker has applied (the last few hundred)."""
        applied = self.state.get("applied")
        return {a for a in applied if isinstance(a, str)} if isinstance(applied, list) else set()

    @property
    def refused_commands(self) -> dict[str, str]:
        """Ids of the control commands this worker could not apply, with why."""
        refused = self.state.get("refused_commands")
        return {str(k): str(v) for k, v in refused.items()} if isinstance(refused, dict) else {}


class Heartbeat:
    """Writes one worker's status at most every ``every`` seconds; never raises.

    A worker must not stop because Redis hiccups: a failed beat is logged once and
    retried on the next call.
    """

    def __init__(
        self, settings: Settings, name: str, client: redis.Redis | None = None, every: float = 1.0
    ) -> None:
        self.key = worker_key(settings, name)
        self.every = every
        self._client: Any = client or redis_client(settings)
        self._last = float("-inf")
        self._failing = False

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every

    def beat(self, state: dict[str, Any], *, force: bool = False) -> None:
        if not force and not self.due():
            return
        self._last = time.monotonic()
        value = orjson.dumps({"at": utcnow(), **state}, option=orjson.OPT_NON_STR_KEYS)
        try:
            self._client.set(self.key, value, ex=TTL_SECONDS)
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("heartbeat to %s failed (retrying quietly): %s", self.key, exc)
            self._failing = True
        else:
            self._failing = False

    def close(self) -> None:
        self._client.close()


def worker_key(settings: Settings, name: str) -> str:
    return settings.key("worker", name)


def read(settings: Settings, client: redis.Redis | None = None) -> list[WorkerStatus]:
    """Every worker that beat within ``TTL_SECONDS``, by name."""
    own = client is None
    conn: Any = client or redis_client(settings)
    try:
        prefix = worker_key(settings, "")
        keys = sorted(conn.scan_iter(match=f"{prefix}*", count=1000))
        values = conn.mget(keys) if keys else []
    finally:
        if own:
            conn.close()
    return sorted(_parse(keys, values, len(prefix)), key=lambda w: w.name)


def _parse(keys: Iterable[bytes], values: Iterable[bytes | None], strip: int) -> list[WorkerStatus]:
    statuses = []
    for key, raw in zip(keys, values, strict=True):
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            obj = orjson.loads(raw)
            if not isinstance(obj, dict):
                raise RecordError(Reason.WRONG_TYPE, "not a JSON object")
            at = parse_ts(obj.pop("at", None), "at")
        except (orjson.JSONDecodeError, RecordError) as exc:
            log.warning("unreadable heartbeat at %r: %s", key, exc)
            continue
        statuses.append(WorkerStatus(key.decode(errors="replace")[strip:], at, obj))
    return statuses
