"""``loopline history``: why did the model change at 14:02?

One time line from the records each part of the loop keeps: checkpoints (the
``checkpoints`` topic), the pusher's verdicts on them (qualified or refused, with
reasons, and what the push did), every change to the routing state (pushes, ramp
stages, guardrail rollbacks, operators' rollbacks, pins, the kill switch: the routing
log in Redis, its last 200 entries) and every command on ``control`` (pauses,
resumes, anomalous windows, replays, with who and why).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

import orjson
import redis

from loopline.contracts import CheckpointManifest, CommandKind, parse_ts
from loopline.control import read_all
from loopline.errors import RecordError
from loopline.kafka import read_tail
from loopline.routing import RoutingStore
from loopline.settings import Settings


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    kind: str  # checkpoint | qualified | refused | routing | control
    by: str
    what: str
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "by": self.by, "what": self.what, "why": self.why}


def collect(
    settings: Settings, since: datetime | None = None, until: datetime | None = None
) -> list[Entry]:
    entries = [
        *_control(settings),
        *_checkpoints(settings),
        *_verdicts(settings),
        *_routing(settings),
    ]
    return sorted(
        (
            e
            for e in entries
            if (since is None or e.at >= since) and (until is None or e.at <= until)
        ),
        key=lambda e: e.at,
    )


def _control(settings: Settings) -> list[Entry]:
    entries = []
    for c in read_all(settings):
        args = " ".join(f"{k}={v}" for k, v in c.args.items())
        scope = "" if c.scope == "*" else f" ({c.scope})"
        what = f"{c.kind.value}{scope}{' ' + args if args else ''}"
        if c.kind is CommandKind.PAUSE and c.evidence.get("breaches"):
            checks = ", ".join(str(b.get("check")) for b in c.evidence["breaches"])
            what += f" [evidence: {checks}]"
        entries.append(Entry(c.issued_at, "control", c.issued_by, what, c.reason))
    return entries


def _checkpoints(settings: Settings) -> list[Entry]:
    entries = []
    for record in read_tail(settings, "checkpoints"):
        try:
            m = CheckpointManifest.from_json(record.value or b"")
        except RecordError:
            continue
        metrics = ", ".join(
            f"{k}={v:.4g}" for k, v in m.metrics.items() if v is not None and "@" not in k
        )
        what = (
            f"checkpoint {m.checkpoint_id} of {m.model_name} v{m.spec_version} "
            f"(lineage {m.lineage}, {m.examples_seen} examples{', ' + metrics if metrics else ''})"
        )
        entries.append(Entry(m.created_at, "checkpoint", f"trainer.{m.model_name}", what))
    return entries


def _verdicts(settings: Settings) -> list[Entry]:
    client: Any = redis.Redis.from_url(settings.redis_url)
    try:
        prefix = settings.key("verdict", "")
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        raws = client.mget(keys) if keys else []
    finally:
        client.close()
    entries = []
    for raw in raws:
        if raw is None:
            continue
        v = orjson.loads(raw)
        try:
            at = parse_ts(v.get("decided_at"), "decided_at")
        except RecordError:
            continue
        verdict = str(v.get("verdict"))
        what = f"{verdict} {v.get('checkpoint_id')}"
        if v.get("action"):
            what += f": {v['action']}"
        why = "; ".join(str(r) for r in v.get("reasons", ()))
        entries.append(Entry(at, verdict, "pusher", what, why))
    return entries


def _routing(settings: Settings) -> list[Entry]:
    store = RoutingStore(settings)
    try:
        log = store.log(200)
    finally:
        store.close()
    entries = []
    for item in log:
        try:
            at = parse_ts(item.get("at"), "at")
        except RecordError:
            continue
        version = f" (routing v{item['version']})" if "version" in item else ""
        entries.append(Entry(at, "routing", str(item.get("by")), f"{item.get('action')}{version}"))
    return entries


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """RFC 3339, or ``HH:MM[:SS]`` meaning today in this machine's timezone.

    >>> parse_when("2026-11-22T14:02:00Z").isoformat()
    '2026-11-22T14:02:00+00:00'
    >>> now = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
    >>> parse_when("14:02", now).isoformat()
    '2026-11-22T14:02:00+00:00'
    """
    local_now = now or datetime.now(UTC).astimezone()
    if len(text) > 8:  # a date and time, not a time of day
        return parse_ts(text, "time")
    clock = time.fromisoformat(text)
    return local_now.replace(
        hour=clock.hour, minute=clock.minute, second=clock.second, microsecond=0
    )
