"""The routing table and the ramp state, as serving and the pusher share them in Redis.

Keys, in the deployment's namespace (``settings.key``)::

    routing          RoutingTable (JSON): versioned (checkpoint, percent) routes and the champion
    ramp             RampState (JSON): the staged ramp-up in progress, or the last one
    kill_switch      {"on", "reason", "by", "at"} (JSON): serving answers from the fallback
    pin              the checkpoint operators pinned: automatic pushes hold off
    served           checkpoints serving now or kept to roll back to (trainer retention keeps them)
    champions        the last ROLLBACK_DEPTH former champions, newest first (rollback targets)
    verdict:<id>     a checkpoint's qualification verdict, reasons and manifest (JSON); the
                     pusher deletes it once the checkpoint left the checkpoint store
    log              the latest routing changes, newest first (JSON lines, capped)
    control_applied  ids of the ``control`` Commands applied (sorted set, scored by when),
                     each added in the transaction that applied it: a Command is applied
                     once, and never lost; ids older than ``control_applied_days`` are
                     trimmed as new ones are added
    rolled_back      checkpoints a rollback took out of serving, kept while they are
                     former champions or served (nothing else reads them)

Every key is bounded: by a cap, a trim in the transaction that adds to it, or the
checkpoint store (verdicts).

Writers change ``routing`` and ``ramp`` in one optimistic transaction
(:meth:`RoutingStore.update`), so the pusher and an operator never overwrite each other,
and a ramp's status only moves along :data:`TRANSITIONS`. A transaction that keeps
losing the race backs off (jittered) and gives up with :class:`RoutingContention`.

>>> table = RoutingTable(version=1, routes=(Route("new", 25.0), Route("old", 75.0)))
>>> table.pick("user-42") in {"new", "old"}
True
>>> RampStatus.PROMOTED in TRANSITIONS[RampStatus.PAUSED]
False
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import orjson
import redis

from loopline.contracts import parse_ts, utcnow
from loopline.errors import LooplineError, Reason, RecordError
from loopline.redis_client import redis_client
from loopline.settings import Settings

log = logging.getLogger(__name__)

_LOG_LENGTH = 200
#: Turns a ``control_applied`` set written by an earlier release into the sorted set,
#: atomically (every member dated now); nothing to do for a sorted set or no key.
_APPLIED_TO_SORTED = """
if redis.call('type', KEYS[1]).ok ~= 'set' then return 0 end
local members = redis.call('smembers', KEYS[1])
redis.call('del', KEYS[1])
for i = 1, #members do redis.call('zadd', KEYS[1], ARGV[1], members[i]) end
return #members
"""
#: Former champions kept as rollback targets (and protected from the trainer's pruning).
ROLLBACK_DEPTH = 10
_SCALE = 2**64
#: Optimistic transactions: attempts, and the jittered backoff between them (seconds).
UPDATE_ATTEMPTS = 12
_BACKOFF_BASE, _BACKOFF_CAP = 0.01, 0.5


class RoutingError(LooplineError):
    """A routing change is not allowed in the current state (names both)."""


class RoutingContention(RoutingError):
    """Others kept changing the routing state: a change gave up after its attempts."""


class AlreadyApplied(RoutingError):
    """This control Command was applied before: applying it again changes nothing."""


def bucket(entity_id: str) -> float:
    """A stable position in [0, 100) for an entity: the same entity, the same version."""
    digest = hashlib.blake2b(entity_id.encode(), digest_size=8, person=b"lloute").digest()
    return int.from_bytes(digest, "big") * 100 / _SCALE


@dataclass(frozen=True, slots=True)
class Route:
    checkpoint_id: str
    percent: float


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Which checkpoints serve which share of entities.

    Routes are cut from the start of the bucket line in order; a ramp puts the candidate
    first, so raising its share only moves baseline entities over, never back.
    """

    version: int = 0
    routes: tuple[Route, ...] = ()
    champion: str | None = None
    reason: str = ""
    updated_at: datetime | None = None

    def pick(self, entity_id: str) -> str | None:
        """The checkpoint serving this entity, or None where no route covers it."""
        position = bucket(entity_id)
        edge = 0.0
        last = None
        for route in self.routes:
            if route.percent <= 0:
                continue
            edge += route.percent
            last = route.checkpoint_id
            if position < edge:
                return last
        # Shares summing to 100 may fall short of it by a rounding error.
        return last if edge >= 100 - 1e-9 else None
        return last

    @property
    def checkpoint_ids(self) -> tuple[str, ...]:
        return tuple(r.checkpoint_id for r in self.routes if r.percent > 0)

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> RoutingTable:
        """The table in ``raw``; :class:`RecordError` if it holds none."""

        def build(obj: dict[str, Any]) -> RoutingTable:
            champion = obj.get("champion")
            if champion is not None and not isinstance(champion, str):
                raise TypeError("champion must be a string")
            return cls(
                version=int(obj["version"]),
                routes=tuple(
                    Route(str(r["checkpoint_id"]), float(r["percent"])) for r in obj["routes"]
                ),
                champion=champion,
                reason=str(obj.get("reason", "")),
                updated_at=_opt_ts(obj.get("updated_at")),
            )

        return _decode(raw, "routing table", build)


def serve_only(table: RoutingTable, checkpoint_id: str, reason: str) -> RoutingTable:
    """The next table: one checkpoint as champion with all traffic."""
    return replace(
        table, routes=(Route(checkpoint_id, 100.0),), champion=checkpoint_id, reason=reason
    )


def split(
    table: RoutingTable, candidate: str, baseline: str, percent: float, reason: str
) -> RoutingTable:
    """The next table: ``percent`` of entities on the candidate, the rest on the baseline."""
    routes = (Route(candidate, percent), Route(baseline, 100.0 - percent))
    return replace(table, routes=routes, champion=baseline, reason=reason)


class RampStatus(StrEnum):
    RAMPING = "ramping"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


#: The guarded transitions of a ramp; the last three statuses are final.
TRANSITIONS: dict[RampStatus, frozenset[RampStatus]] = {
    RampStatus.RAMPING: frozenset(
        {
            RampStatus.RAMPING,
            RampStatus.PAUSED,
            RampStatus.PROMOTED,
            RampStatus.ROLLED_BACK,
            RampStatus.ABORTED,
        }
    ),
    RampStatus.PAUSED: frozenset({RampStatus.RAMPING, RampStatus.ROLLED_BACK, RampStatus.ABORTED}),
    RampStatus.PROMOTED: frozenset(),
    RampStatus.ROLLED_BACK: frozenset(),
    RampStatus.ABORTED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class RampState:
    """A staged ramp-up of ``candidate`` against ``baseline``.

    ``stage`` indexes ``stages`` (percent of entities on the candidate). Dwell time is
    counted while ramping only: ``dwelled`` holds what a stage accrued before a pause.
    """

    candidate: str
    baseline: str
    stages: tuple[float, ...]
    dwell_seconds: float
    status: RampStatus = RampStatus.RAMPING
    stage: int = 0
    started_at: datetime = field(default_factory=utcnow)
    stage_started_at: datetime = field(default_factory=utcnow)
    dwelled: float = 0.0
    reason: str = ""
    updated_at: datetime = field(default_factory=utcnow)

    @property
    def active(self) -> bool:
        return self.status in (RampStatus.RAMPING, RampStatus.PAUSED)

    @property
    def percent(self) -> float:
        return self.stages[self.stage]

    @property
    def last_stage(self) -> bool:
        return self.stage == len(self.stages) - 1

    def dwell(self, now: datetime) -> float:
        """Seconds spent ramping in the current stage."""
        if self.status is not RampStatus.RAMPING:
            return self.dwelled
        return self.dwelled + (now - self.stage_started_at).total_seconds()

    def moved(self, status: RampStatus, reason: str, now: datetime | None = None) -> RampState:
        """The state after a guarded transition; :class:`RoutingError` if not allowed."""
        if status not in TRANSITIONS[self.status]:
            msg = f"ramp of {self.candidate} is {self.status}; it cannot become {status}"
            raise RoutingError(msg)
        now = now or utcnow()
        dwelled = self.dwell(now)
        return replace(
            self,
            status=status,
            reason=reason,
            updated_at=now,
            dwelled=dwelled,
            stage_started_at=now,
        )

    def advanced(self, reason: str, now: datetime | None = None) -> RampState:
        if self.status is not RampStatus.RAMPING or self.last_stage:
            msg = f"ramp of {self.candidate} is {self.status} at stage {self.stage}; it cannot advance"
            raise RoutingError(msg)
        now = now or utcnow()
        return replace(
            self,
            stage=self.stage + 1,
            stage_started_at=now,
            dwelled=0.0,
            reason=reason,
            updated_at=now,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> RampState:
        """The ramp in ``raw``; :class:`RecordError` if it holds none."""

        def build(obj: dict[str, Any]) -> RampState:
            stages, stage = tuple(float(s) for s in obj["stages"]), int(obj["stage"])
            if not 0 <= stage < len(stages):
                raise ValueError(f"stage {stage} is not one of {len(stages)} stages")
            return cls(
                candidate=str(obj["candidate"]),
                baseline=str(obj["baseline"]),
                stages=stages,
                dwell_seconds=float(obj["dwell_seconds"]),
                status=RampStatus(obj["status"]),
                stage=stage,
                started_at=parse_ts(obj["started_at"]),
                stage_started_at=parse_ts(obj["stage_started_at"]),
                dwelled=float(obj["dwelled"]),
                reason=str(obj.get("reason", "")),
                updated_at=parse_ts(obj["updated_at"]),
            )

        return _decode(raw, "ramp state", build)


def _opt_ts(value: Any) -> datetime | None:
    return None if value is None else parse_ts(value)


def _object_or_empty(raw: bytes | str) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


_T = TypeVar("_T")


def _decode(raw: bytes | str, what: str, build: Callable[[dict[str, Any]], _T]) -> _T:
    """Build one piece of routing state from its JSON; any bad input is a RecordError.

    Redis is shared: whatever is found under a key, readers get a value or a
    :class:`RecordError` (a :class:`LooplineError`, which status and the CLI report).
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordError(Reason.MALFORMED_JSON, f"{what}: {exc}") from None
    if not isinstance(obj, dict):
        raise RecordError(Reason.WRONG_TYPE, f"{what}: not a JSON object")
    try:
        return build(obj)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise RecordError(Reason.WRONG_TYPE, f"{what}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True, slots=True)
class KillSwitch:
    on: bool = False
    reason: str = ""
    by: str = ""
    at: datetime | None = None

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> KillSwitch:
        if raw is None:
            return cls()

        def build(obj: dict[str, Any]) -> KillSwitch:
            return cls(bool(obj["on"]), str(obj["reason"]), str(obj["by"]), _opt_ts(obj.get("at")))

        return _decode(raw, "kill switch", build)


Change = Callable[
    [RoutingTable, RampState | None], tuple[RoutingTable | None, RampState | None] | None
]


class RoutingStore:
    """Reads and changes the routing state of one deployment."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        # Any: redis-py types its sync and asyncio clients alike (results "Awaitable | T").
        self.client: Any = client or redis_client(settings)
        self.routing_key = settings.key("routing")
        self.ramp_key = settings.key("ramp")
        self.kill_key = settings.key("kill_switch")
        self.pin_key = settings.key("pin")
        self.served_key = settings.key("served")
        self.champions_key = settings.key("champions")
        self.log_key = settings.key("log")
        self.applied_key = settings.key("control_applied")
        self.rolled_back_key = settings.key("rolled_back")
        self._verdict_prefix = settings.key("verdict", "")
        self._applied_seconds = settings.control_applied_days * 86_400
        self._applied_sorted = False

    def close(self) -> None:
        self.client.close()

    # -- reading -------------------------------------------------------------------

    def table(self) -> RoutingTable:
        raw = self.client.get(self.routing_key)
        return RoutingTable() if raw is None else RoutingTable.from_json(raw)

    def ramp(self) -> RampState | None:
        raw = self.client.get(self.ramp_key)
        return None if raw is None else RampState.from_json(raw)

    def serving_view(self) -> tuple[RoutingTable, KillSwitch]:
        """What serving needs, in one round trip."""
        routing, kill = self.client.mget([self.routing_key, self.kill_key])
        table = RoutingTable() if routing is None else RoutingTable.from_json(routing)
        return table, KillSwitch.from_json(kill)

    def kill_switch(self) -> KillSwitch:
        return KillSwitch.from_json(self.client.get(self.kill_key))

    def pinned(self) -> str | None:
        raw = self.client.get(self.pin_key)
        return None if raw is None else raw.decode()

    def served(self) -> set[str]:
        return {m.decode() for m in self.client.smembers(self.served_key)}

    def former_champions(self) -> list[str]:
        return [c.decode() for c in self.client.lrange(self.champions_key, 0, -1)]

    def rolled_back(self) -> set[str]:
        """Checkpoints a rollback took out of serving: never a rollback target again."""
        return {m.decode() for m in self.client.smembers(self.rolled_back_key)}

    def log(self, count: int = 20) -> list[dict[str, Any]]:
        """The latest changes, newest first; an entry that is not a JSON object reads as
        ``{}`` (readers skip an entry without ``at`` and can count it)."""
        return [_object_or_empty(e) for e in self.client.lrange(self.log_key, 0, count - 1)]

    def verdict_ids(self) -> set[str]:
        """Every checkpoint with a verdict in Redis."""
        cut = len(self._verdict_prefix)
        keys = self.client.scan_iter(match=self._verdict_prefix + "*", count=1000)
        return {k.decode()[cut:] for k in keys}

    def verdict(self, checkpoint_id: str) -> dict[str, Any] | None:
        """The verdict on a checkpoint; None if there is none or it is unreadable (so the
        checkpoint is not qualified, and the pusher judges it again)."""
        raw = self.client.get(self._verdict_prefix + checkpoint_id)
        if raw is None:
            return None
        verdict = _object_or_empty(raw)
        if not verdict:
            log.warning("unreadable verdict on %s in Redis: judged as none", checkpoint_id)
        return verdict or None

    # -- writing -------------------------------------------------------------------

    def update(
        self,
        change: Change,
        action: str,
        by: str = "pusher",
        *,
        unless_pinned: bool = False,
        set_pin: str | None = None,
        command_id: str | None = None,
        retire_champion: bool = False,
    ) -> RoutingTable:
        """Apply ``change`` to the current (table, ramp) atomically; retried on contention.

        ``change`` returns the new table and ramp (``None`` leaves one as is), or ``None``
        to change nothing. Raising :class:`RoutingError` aborts. Returns the table now in force.
        With ``unless_pinned`` nothing changes while operators hold a pin; ``set_pin``
        sets the pin in the same transaction, so no automatic push slips in between.
        ``command_id`` records the control Command in the same transaction (raising
        :class:`AlreadyApplied` if it was recorded before); ``retire_champion`` adds the
        champion the change replaces to ``rolled_back``.
        """
        watched = [
            self.routing_key,
            self.ramp_key,
            self.served_key,
            self.champions_key,
            self.pin_key,
            self.rolled_back_key,
        ]
        if command_id is not None:
            watched.append(self.applied_key)
            self._sorted_applied()
        for attempt in range(UPDATE_ATTEMPTS):
            if attempt:
                _backoff(attempt)
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*watched)
                    if command_id is not None and self._was_applied(pipe, command_id):
                        pipe.unwatch()
                        raise AlreadyApplied(f"command {command_id} was applied before")
                    raw_table, raw_ramp = pipe.mget([self.routing_key, self.ramp_key])
                    served = {m.decode() for m in pipe.smembers(self.served_key)}
                    former = [c.decode() for c in pipe.lrange(self.champions_key, 0, -1)]
                    pinned = pipe.get(self.pin_key)
                    retired = {m.decode() for m in pipe.smembers(self.rolled_back_key)}
                    table = (
                        RoutingTable() if raw_table is None else RoutingTable.from_json(raw_table)
                    )
                    ramp = None if raw_ramp is None else RampState.from_json(raw_ramp)
                    result = None if unless_pinned and pinned else change(table, ramp)
                    if result is None and command_id is None:
                        pipe.unwatch()
                        return table
                    new_table, new_ramp = (None, None) if result is None else result
                    pipe.multi()
                    now = utcnow()
                    if new_table is not None and new_table != table:
                        new_table = replace(new_table, version=table.version + 1, updated_at=now)
                        pipe.set(self.routing_key, new_table.to_json())
                        if new_table.checkpoint_ids:
                            pipe.sadd(self.served_key, *new_table.checkpoint_ids)
                        if table.champion and new_table.champion != table.champion:
                            former.insert(0, table.champion)
                            pipe.lpush(self.champions_key, table.champion)
                            pipe.ltrim(self.champions_key, 0, ROLLBACK_DEPTH - 1)
                        keep = {*new_table.checkpoint_ids, *former[:ROLLBACK_DEPTH]}
                        keep |= {pinned.decode()} if pinned else set()
                        keep |= {ramp.candidate, ramp.baseline} if ramp is not None else set()
                        if served - keep:
                            pipe.srem(self.served_key, *(served - keep))
                        if retire_champion and table.champion not in (None, new_table.champion):
                            pipe.sadd(self.rolled_back_key, table.champion)
                        # A retired checkpoint matters while it could be picked again.
                        forgotten = retired - keep - set(former[:ROLLBACK_DEPTH])
                        if forgotten:
                            pipe.srem(self.rolled_back_key, *forgotten)
                    else:
                        new_table = table
                    if new_ramp is not None:
                        pipe.set(self.ramp_key, new_ramp.to_json())
                    if set_pin is not None:
                        pipe.set(self.pin_key, set_pin)
                        pipe.sadd(self.served_key, set_pin)
                    if command_id is not None:
                        self._mark_applied(pipe, command_id)
                    if result is not None:
                        entry = {
                            "at": now,
                            "by": by,
                            "action": action,
                            "version": new_table.version,
                        }
                        pipe.lpush(self.log_key, orjson.dumps(entry))
                        pipe.ltrim(self.log_key, 0, _LOG_LENGTH - 1)
                    pipe.execute()
                    return new_table
                except redis.WatchError:
                    continue
        msg = (
            f"routing change {action!r} lost the race {UPDATE_ATTEMPTS} times in a row "
            "(others keep changing the routing state); nothing changed, try again"
        )
        raise RoutingContention(msg)

    def set_kill_switch(
        self, on: bool, reason: str, by: str, *, command_id: str | None = None
    ) -> None:
        """Turn the kill switch on or off; ``command_id`` as in :meth:`update`."""
        value = {"on": on, "reason": reason, "by": by, "at": utcnow()}
        entry = {
            "at": utcnow(),
            "by": by,
            "action": f"kill switch {'on' if on else 'off'}: {reason}",
        }
        if command_id is not None:
            self._sorted_applied()
        for attempt in range(UPDATE_ATTEMPTS):
            if attempt:
                _backoff(attempt)
            with self.client.pipeline(transaction=True) as pipe:
                if command_id is not None:
                    # WATCH makes the check and the record one step: a concurrent apply
                    # of the same Command fails the EXEC instead of applying twice.
                    pipe.watch(self.applied_key)
                    if self._was_applied(pipe, command_id):
                        pipe.unwatch()
                        raise AlreadyApplied(f"command {command_id} was applied before")
                    pipe.multi()
                    self._mark_applied(pipe, command_id)
                pipe.set(self.kill_key, orjson.dumps(value))
                pipe.lpush(self.log_key, orjson.dumps(entry))
                pipe.ltrim(self.log_key, 0, _LOG_LENGTH - 1)
                try:
                    pipe.execute()
                except redis.WatchError:
                    continue
                return
        msg = f"kill switch {'on' if on else 'off'}: lost the race {UPDATE_ATTEMPTS} times in a row"
        raise RoutingContention(msg)

    def pin(self, checkpoint_id: str | None) -> None:
        if checkpoint_id is None:
            self.client.delete(self.pin_key)
        else:
            self.client.set(self.pin_key, checkpoint_id)

    def command_applied(self, command_id: str) -> bool:
        """Whether a control Command was applied (recorded with its change) within
        ``control_applied_days``."""
        self._sorted_applied()
        return self._was_applied(self.client, command_id)

    def _sorted_applied(self) -> None:
        if not self._applied_sorted:
            self.client.eval(_APPLIED_TO_SORTED, 1, self.applied_key, utcnow().timestamp())
            self._applied_sorted = True

    def _was_applied(self, client: Any, command_id: str) -> bool:
        return client.zscore(self.applied_key, command_id) is not None

    def _mark_applied(self, pipe: Any, command_id: str) -> None:
        """Record a Command applied and trim the ids past the horizon, in ``pipe``'s
        transaction."""
        now = utcnow().timestamp()
        pipe.zadd(self.applied_key, {command_id: now})
        pipe.zremrangebyscore(self.applied_key, "-inf", now - self._applied_seconds)

    def record_verdict(self, checkpoint_id: str, verdict: dict[str, Any]) -> None:
        raw = orjson.dumps(verdict, option=orjson.OPT_NON_STR_KEYS)
        self.client.set(self._verdict_prefix + checkpoint_id, raw)

    def forget_verdicts(self, checkpoint_ids: set[str]) -> None:
        """Delete these checkpoints' verdicts (their checkpoints are gone)."""
        if checkpoint_ids:
            self.client.delete(*(self._verdict_prefix + cid for cid in checkpoint_ids))


def _backoff(attempt: int) -> None:
    """Full jitter: contenders spread out instead of colliding again in lockstep."""
    time.sleep(random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)))
