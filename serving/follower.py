"""Follows the routing table in Redis and swaps models in without dropping a request.

A background thread polls the table and the kill switch every ``interval`` seconds.
Models load there, never on a request. Requests read :attr:`RoutingFollower.current`
once, an immutable :class:`Snapshot`; the swap is one reference assignment, so a
request in flight finishes on the models it started with.

A table applies only when every route's checkpoint verifies; otherwise the running
snapshot stays (a tampered or foreign checkpoint never takes traffic) and the
refusal shows in ``/healthz``. With nothing serving yet, the routes that verify serve
their own share (the champion also takes the share of routes that did not load); the
rest of the traffic gets the fallback.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from loopline.heartbeat import Heartbeat
from loopline.routing import KillSwitch, Route, RoutingStore, RoutingTable
from serving.models import ModelCache

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one request sees: the table in force, its models, and whether Redis answers."""

    table: RoutingTable = field(default_factory=RoutingTable)
    models: dict[str, Any] = field(default_factory=dict)
    kill: KillSwitch = field(default_factory=KillSwitch)
    redis_ok: bool = True
    #: The Redis table version fully applied, or -1 while some route is refused.
    wanted_version: int = 0


def _servable(table: RoutingTable, models: dict[str, Any]) -> RoutingTable:
    """The table restricted to routes whose model loaded.

    A route that did not load passes its share to the champion when the champion
    loaded, else to the fallback: a candidate never takes more than its share.
    """
    routes = [r for r in table.routes if r.percent > 0 and r.checkpoint_id in models]
    missing = sum(
        r.percent for r in table.routes if r.percent > 0 and r.checkpoint_id not in models
    )
    if missing and table.champion in models:
        routes = [
            Route(r.checkpoint_id, r.percent + missing) if r.checkpoint_id == table.champion else r
            for r in routes
        ]
    return replace(table, routes=tuple(routes))


class RoutingFollower:
    def __init__(
        self,
        store: RoutingStore,
        cache: ModelCache,
        interval: float = 0.2,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self._store = store
        self._cache = cache
        self._interval = interval
        self._heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current = Snapshot()
        #: Checkpoints of the latest table that failed to load, with the reason.
        self.refused: dict[str, str] = {}
        #: Monotonic times of the last round of the loop, and of the last one that read Redis.
        self.last_round: float | None = None
        self.last_read: float | None = None

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="routing-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.refresh()
            except Exception:  # keep following whatever one round did
                log.exception("routing refresh failed")
            if self._heartbeat is not None:
                self._heartbeat.beat(self.report())
            self.last_round = time.monotonic()

    def alive(self, within: float) -> bool:
        """Whether the loop runs and finished a round within ``within`` seconds."""
        thread, last = self._thread, self.last_round
        if thread is None or not thread.is_alive():
            return False
        return last is None or time.monotonic() - last <= within

    def stale(self, within: float) -> bool:
        """Whether the table in force was last read from Redis over ``within`` seconds ago."""
        last = self.last_read
        return last is None or time.monotonic() - last > within

    def report(self) -> dict[str, Any]:
        """What this instance serves, for ``loopline status``."""
        snap = self.current
        return {
            "routing_version": snap.table.version,
            "routes": {r.checkpoint_id: r.percent for r in snap.table.routes},
            "kill_switch": snap.kill.on,
            "redis_ok": snap.redis_ok,
            "refused": self.refused,
        }

    def created(self) -> dict[str, float]:
        """When each model serving now was checkpointed (epoch seconds): its age."""
        manifests = {cid: self._cache.manifest(cid) for cid in self.current.models}
        return {cid: m.created_at.timestamp() for cid, m in manifests.items() if m is not None}

    def refresh(self) -> None:
        current = self.current
        try:
            table, kill = self._store.serving_view()
        except (redis.RedisError, OSError) as exc:
            if current.redis_ok:
                log.error("Redis unreachable, answering from the fallback: %s", exc)
            self.current = replace(current, redis_ok=False)
            return
        self.last_read = time.monotonic()
        if table.version == current.table.version and table.version == current.wanted_version:
            if kill != current.kill or not current.redis_ok:
                self.current = replace(current, kill=kill, redis_ok=True)
            return
        models = {}
        for cid in table.checkpoint_ids:
            loaded = self._cache.get(cid)
            if loaded is not None:
                models[cid] = loaded.model
        complete = len(models) == len(table.checkpoint_ids)
        reasons = self._cache.refused
        self.refused = {
            cid: reasons.get(cid, "not loaded") for cid in table.checkpoint_ids if cid not in models
        }
        if complete or not current.models:
            wanted = table.version if complete else -1
            self.current = Snapshot(_servable(table, models), models, kill, True, wanted)
            self._cache.keep_only(set(models))
            if table.version != current.table.version:
                log.info("serving routing table v%d: %s", table.version, table.routes)
        else:
            # Keep serving what verified; try the table again next round.
            self.current = replace(current, kill=kill, redis_ok=True, wanted_version=-1)
