"""``loopline history``: why did the model change at 14:02?

One time line from the records each part of the loop keeps: checkpoints (the
``checkpoints`` topic), the pusher's verdicts on them (qualified or refused, with
reasons, and what the push did), every change to the routing state (pushes, ramp
stages, guardrail rollbacks, operators' rollbacks, pins, the kill switch: the routing
log in Redis, its last 200 entries) and every command on ``control`` (pauses,
resumes, anomalous windows, replays, with who and why). Who issued a command is the
operator key that signed it: an entry whose signature does not prove its ``by`` says
why it is unverified, and a command readers refused says it was not applied. A
source that cannot be read,
or that no longer reaches back to ``since``, is named in the notes: the time line is
then incomplete, and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time
from typing import Any

import orjson
import redis

from loopline.contracts import CheckpointManifest, Command, CommandKind, parse_ts
from loopline.control import read_log
from loopline.errors import LooplineError, RecordError
from loopline.kafka import read_tail
from loopline.redis_client import redis_client
from loopline.routing import RoutingStore
from loopline.settings import Settings
from loopline.signing.commands import operator_keys

ROUTING_LOG_DEPTH = 200  # what the routing log keeps (loopline.routing)


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    kind: str  # checkpoint | qualified | refused | routing | control
    by: str
    what: str
    why: str = ""
    #: for a command: why its signature does not prove ``by`` ("" when it does)
    unverified: str = ""

    @property
    def who(self) -> str:
        return f"{self.by} (unverified: {self.unverified})" if self.unverified else self.by

    def as_dict(self) -> dict[str, Any]:
        found = {
            "at": self.at,
            "kind": self.kind,
            "by": self.by,
            "what": self.what,
            "why": self.why,
        }
        if self.kind == "control":
            found |= {"verified": not self.unverified, "unverified": self.unverified}
        return found


@dataclass(frozen=True, slots=True)
class Timeline:
    entries: list[Entry]  # in time order
    unread: dict[str, str]  # source -> why it could not be read
    caveats: list[str]  # sources read that do not reach back far enough


def collect(
    settings: Settings, since: datetime | None = None, until: datetime | None = None
) -> Timeline:
    """The entries in ``[since, until]`` in time order, and what is missing from them."""
    sources: dict[str, Callable[[Settings], tuple[list[Entry], int]]] = {
        "control": _control,
        "checkpoints": _checkpoints,
        "verdicts": _verdicts,
        "routing log": _routing,
    }
    entries: list[Entry] = []
    unread: dict[str, str] = {}
    caveats = []
    for name, read in sources.items():
        try:
            found, skipped = read(settings)
        except (LooplineError, redis.RedisError, OSError) as exc:
            unread[name] = f"{type(exc).__name__}: {exc}"
            continue
        if skipped:
            caveats.append(f"{name}: {skipped} unreadable records skipped")
        if name == "routing log" and len(found) >= ROUTING_LOG_DEPTH:
            oldest = min(e.at for e in found)
            if since is None or since < oldest:
                caveats.append(
                    f"the routing log keeps its last {ROUTING_LOG_DEPTH} changes: "
                    f"pushes and ramps before {oldest.isoformat(timespec='seconds')} are not shown"
                )
        entries.extend(found)
    kept = sorted(
        (
            e
            for e in entries
            if (since is None or e.at >= since) and (until is None or e.at <= until)
        ),
        key=lambda e: e.at,
    )
    return Timeline(kept, unread, caveats)


# Each source returns its entries and how many of its records it could not read.


def _control(settings: Settings) -> tuple[list[Entry], int]:
    keys = operator_keys(settings)
    control = read_log(settings, keys=keys)
    entries = [_command(c, keys.unverified(c) or "") for c in control.commands]
    for refused in control.refused:
        entry = _command(refused.command, keys.unverified(refused.command) or "")
        entries.append(replace(entry, what=f"{entry.what} [refused: not applied]"))
    return entries, control.unreadable


def _command(c: Command, unverified: str) -> Entry:
    args = " ".join(f"{k}={v}" for k, v in c.args.items())
    scope = "" if c.scope == "*" else f" ({c.scope})"
    what = f"{c.kind.value}{scope}{' ' + args if args else ''}"
    breaches = c.evidence.get("breaches")
    if c.kind is CommandKind.PAUSE and breaches and isinstance(breaches, list):
        checks = ", ".join(str(b.get("check") if isinstance(b, dict) else b) for b in breaches)
        what += f" [evidence: {checks}]"
    return Entry(c.issued_at, "control", c.issued_by, what, c.reason, unverified)


def _checkpoints(settings: Settings) -> tuple[list[Entry], int]:
    entries, skipped = [], 0
    for record in read_tail(settings, "checkpoints"):
        try:
            m = CheckpointManifest.from_json(record.value or b"")
        except RecordError:
            skipped += 1
            continue
        metrics = ", ".join(
            f"{k}={v:.4g}" for k, v in m.metrics.items() if v is not None and "@" not in k
        )
        what = (
            f"checkpoint {m.checkpoint_id} of {m.model_name} v{m.spec_version} "
            f"(lineage {m.lineage}, {m.examples_seen} examples{', ' + metrics if metrics else ''})"
        )
        entries.append(Entry(m.created_at, "checkpoint", f"trainer.{m.model_name}", what))
    return entries, skipped


def _verdicts(settings: Settings) -> tuple[list[Entry], int]:
    client: Any = redis_client(settings)
    try:
        prefix = settings.key("verdict", "")
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        raws = client.mget(keys) if keys else []
    finally:
        client.close()
    entries, skipped = [], 0
    for raw in raws:
        if raw is None:
            continue
        try:
            v = orjson.loads(raw)
            at = parse_ts(v.get("decided_at"), "decided_at")
        except (orjson.JSONDecodeError, AttributeError, RecordError):
            skipped += 1
            continue
        verdict = str(v.get("verdict"))
        what = f"{verdict} {v.get('checkpoint_id')}"
        if v.get("action"):
            what += f": {v['action']}"
        reasons = v.get("reasons")
        why = "; ".join(str(r) for r in reasons) if isinstance(reasons, list) else ""
        entries.append(Entry(at, verdict, "pusher", what, why))
    return entries, skipped


def _routing(settings: Settings) -> tuple[list[Entry], int]:
    store = RoutingStore(settings)
    try:
        log = store.log(ROUTING_LOG_DEPTH)
    finally:
        store.close()
    entries, skipped = [], 0
    for item in log:
        try:
            at = parse_ts(item.get("at"), "at")
        except (RecordError, AttributeError):
            skipped += 1
            continue
        version = f" (routing v{item['version']})" if "version" in item else ""
        entries.append(Entry(at, "routing", str(item.get("by")), f"{item.get('action')}{version}"))
    return entries, skipped


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
