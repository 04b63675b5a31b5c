"""The join and dedup state of one source partition, and what one batch does to it.

State lives in a changelog-backed table (``MutableMapping[bytes, bytes]``), keyed
``<partition>|<kind>|<id>``:

- ``e|<event_id>``: an event waiting for its label (the features its example carries:
  for a served event, ``o = "s"``, the entity features serving logged), or the
  marker of a resolved event, kept until the event is too old to be accepted again
  (``validation.max_age_seconds`` past its time, at least one horizon after it
  resolved), so a re-published event is always recognised as a duplicate;
- ``l|<event_id>``: a label that overtook its event (see :meth:`PartitionState.tick`);
- ``f|<entity_id>``: the entity's feature state, dropped once its longest window and a
  label horizon have passed in event time without a change (state stays bounded by
  the entities active recently, not by every entity ever seen);
- ``commit``: the commit record: source offsets applied, output positions and the
  accounting counts.

A batch is made durable in this order: its outputs (examples, deadletters) are
acknowledged, then the keys it changed, each once, then the commit record. Keys written
after the last commit record are put back as of that commit on restore (see
:mod:`streams.changelog`), so after a crash the table holds exactly the state of some
commit. Outputs acknowledged after that commit are found again by reading the output
partitions from the recorded positions (:meth:`PartitionState.suppress`), so a
replayed record never emits twice.

A batch that fails before its commit is durable is undone in memory
(:meth:`PartitionState.rollback`): the table returns to the last commit and the
worker reads again from the commit's offsets. Offsets are applied strictly in order
from a known start (:meth:`PartitionState.start`), so a record can be neither skipped
nor applied twice, whatever the consumer delivers.
"""

from __future__ import annotations

import heapq
import logging
import uuid
import zlib
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from loopline.accounting import REJECTED
from loopline.contracts import Example, Features, FeatureValue
from loopline.errors import Reason, RecordError
from loopline.spec import Spec
from streams.changelog import commit_key
from streams.features import EntityFeatureSpec, EntityState
from streams.health import HealthMonitor
from streams.records import RecordDecoder
from streams.skew import SKEW, skew

ORPHAN_GRACE = 5.0
# A batch whose changes grow past this is committed early (see ``Runtime.process``): it
# bounds the undo kept in memory and the tail a restore puts back.
BATCH_BUDGET = 448 * 1024
log = logging.getLogger("loopline.streams")
EVENTS, LABELS = "events", "labels"
#: A waiting event's ``o``: its entity features are the values serving logged.
SERVED = "s"


@dataclass(frozen=True, slots=True)
class Deadletter:
    """A rejected record: its original key and bytes, why, and where it came from."""

    key: bytes | None
    value: bytes | None
    reason: Reason
    detail: str
    topic: str
    partition: int
    offset: int


@dataclass
class Batch:
    """What processing produced since the last commit."""

    examples: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # event_id, key, value
    deadletters: list[Deadletter] = field(default_factory=list)
    changes: dict[bytes, bytes | None] = field(default_factory=dict)
    entities: set[str] = field(default_factory=set)
    undo: dict[bytes, bytes | None] = field(default_factory=dict)  # values as of the commit
    size: int = 0  # bytes the changes take in the changelog


def _epoch(ts: datetime) -> float:
    return ts.timestamp()


def fingerprint(key: bytes | None, value: bytes | None) -> int:
    """Tells one record from another at the same offset (a log that was replaced)."""
    return zlib.crc32(value or b"", zlib.crc32(key or b""))


def _change_size(key: bytes, raw: bytes | None) -> int:
    return len(key) + (0 if raw is None else len(raw))


def _forget_at(marker: dict[str, Any]) -> float:
    """When a resolved event's marker may go (markers written before ``u`` kept ``at``)."""
    until = marker.get("u")
    return float(until) if until is not None else float(marker["at"])


class PartitionState:
    """Processes one partition's records against its table state."""

    def __init__(
        self,
        partition: int,
        spec: Spec,
        table: MutableMapping[bytes, bytes],
        health: HealthMonitor,
        tail: Mapping[bytes, bytes | None] | None = None,
    ) -> None:
        self.partition = partition
        self.spec = spec
        self.table = table
        self.health = health
        self._decoder = RecordDecoder(spec)
        self._entity_spec = EntityFeatureSpec(spec)
        self._horizon = spec.label.horizon_seconds
        self._dedup_seconds = spec.validation.max_age_seconds
        # A label is late only past the horizon plus the clock skew the spec tolerates,
        # so a labeller whose clock runs ahead does not turn real labels into defaults.
        self._late_after = self._horizon + spec.validation.max_future_seconds
        self._prefix = f"{partition}|".encode()
        self.applied: dict[str, int] = {EVENTS: -1, LABELS: -1}
        self.outputs: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.batch = Batch()
        self._entities: dict[str, EntityState] = {}
        self._due: list[tuple[float, str]] = []  # (deadline, event_id) of waiting events
        self._gc: list[tuple[float, str]] = []  # (forget_at, event_id) of resolved markers
        self._orphans: dict[str, tuple[float, float]] = {}  # event_id: (label ts, arrival)
        self._idle: list[tuple[float, str]] = []  # (evict_at, entity_id), once per entity
        self._queued: set[str] = set()  # entities in _idle
        self._keep = self._entity_spec.keep_seconds + self._horizon
        self._event_time = 0.0  # the latest event time read on this partition
        # When (wall clock) the last event and label were read; None: before the first tick.
        self._events_read_at: float | None = None
        self._label_time = 0.0  # the latest label time read on this partition, up to now
        self._labels_read_at: float | None = None
        self.emitted_examples: set[str] = set()
        self.emitted_deadletters: set[tuple[str, int]] = set()
        self._gaps: set[str] = set()
        self._behind: set[str] = set()
        self._started: set[str] = set()
        self.tips: dict[str, int] = {}  # fingerprint of the last applied record per topic
        # Keys put back as of the last commit on restore: written again before the next
        # commit record (same changelog partition, so in order).
        self.rewrite: dict[bytes, bytes | None] = {}
        self.lineage = uuid.uuid4().hex  # replaced by the commit's, if there is one
        self.seq = 0  # the number of the last commit in this lineage
        self._restore(tail or {})

    # -- keys and state -------------------------------------------------------------

    def _key(self, kind: str, ident: str) -> bytes:
        return self._prefix + kind.encode() + b"|" + ident.encode()

    def _get(self, key: bytes) -> dict[str, Any] | None:
        raw = self.table.get(key)
        return None if raw is None else orjson.loads(raw)  # type: ignore[no-any-return]

    def _set(self, key: bytes, raw: bytes | None) -> None:
        if raw is None:
            self.table.pop(key, None)
        else:
            self.table[key] = raw

    def _put(self, key: bytes, value: dict[str, Any] | None) -> None:
        raw = None if value is None else orjson.dumps(value)
        batch = self.batch
        if key not in batch.undo:
            batch.undo[key] = self.table.get(key)
        self._set(key, raw)
        if key in batch.changes:
            batch.size -= _change_size(key, batch.changes[key])
        batch.size += _change_size(key, raw)
        batch.changes[key] = raw

    def rollback(self) -> None:
        """Return the table to the last commit: the batch is dropped, nothing of it kept.

        The partition's in-memory indexes are not rebuilt here; drop this object and
        build a new one from the table (as on assignment).
        """
        for key, raw in self.batch.undo.items():
            self._set(key, raw)
        self.batch = Batch()

    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def _restore(self, tail: Mapping[bytes, bytes | None]) -> None:
        for key, raw in tail.items():  # written after the last commit: not part of it
            self._set(key, raw)
            self.rewrite[key] = raw
        commit = self._get(commit_key(self.partition))
        if commit is not None:
            self.applied.update(commit["applied"])
            self.outputs = commit["outputs"]
            self.counts = commit["counts"]
            self.lineage = commit.get("lineage", self.lineage)
            self.seq = commit.get("seq", 0)
            self.tips = commit.get("tips", {})
            # Commit records of earlier releases carried the batch's changes.
            for key, value in commit.get("changes", {}).items():
                raw = None if value is None else value.encode()
                self._set(key.encode(), raw)
                self.rewrite[key.encode()] = raw
        skip = len(self._prefix)
        for key in [k for k in self.table if k.startswith(self._prefix)]:
            kind, _, ident_b = key[skip:].partition(b"|")
            ident = ident_b.decode()
            value = self._get(key)
            if value is None:
                continue
            if kind == b"e":
                if value["s"] == "w":
                    heapq.heappush(self._due, (value["ts"] + self._horizon, ident))
                else:
                    heapq.heappush(self._gc, (_forget_at(value), ident))
            elif kind == b"l":
                self._orphans[ident] = (value["ts"], value["at"])
            elif kind == b"f":
                self._queued.add(ident)
                heapq.heappush(self._idle, (float(value.get("t", 0.0)) + self._keep, ident))

    def start(self, topic: str, low: int) -> int:
        """Fix where ``topic`` resumes given where its log starts now; the offset to read.

        With a commit, that is the offset after the last applied; without, the log's
        start. A log that starts past that offset lost records to retention before
        they were read: they are counted and logged, and reading resumes at its start.
        """
        applied = self.applied[topic]
        if applied < 0:
            self.applied[topic] = low - 1
        elif low > applied + 1:
            self._count(f"{topic}_lost_to_retention", low - applied - 1)
            log.error(
                "partition %d: %s offsets %d to %d were deleted before they were read "
                "(retention); reading from %d",
                self.partition,
                topic,
                applied + 1,
                low - 1,
                low,
            )
            self.applied[topic] = low - 1
            self.tips.pop(topic, None)  # that record is gone by design, not by a reset
        self._started.add(topic)
        return self.applied[topic] + 1

    def reset(self, topic: str, low: int) -> int:
        """The log no longer holds what was applied (recreated, or a broker that lost its
        data): count it, log it and read the new log from its start."""
        self._count(f"{topic}_log_resets")
        log.error(
            "partition %d: %s no longer holds offset %d that was applied: the topic was "
            "recreated or the broker lost its data; reading it from its start, %d",
            self.partition,
            topic,
            self.applied[topic],
            low,
        )
        self.applied[topic] = low - 1
        self.tips.pop(topic, None)
        return low

    def take_gaps(self) -> tuple[set[str], set[str]]:
        """Topics on which a record was skipped since the last call: one ahead of a gap
        (seek back to the next needed), one already applied (a replay, or a log reset)."""
        gaps, self._gaps = self._gaps, set()
        behind, self._behind = self._behind, set()
        return gaps, behind

    def suppress(self, examples: set[str], deadletters: set[tuple[str, int]]) -> None:
        """Outputs already acknowledged past the commit's positions: do not emit them again."""
        self.emitted_examples |= examples
        self.emitted_deadletters |= deadletters

    def entity(self, entity_id: str) -> EntityState:
        state = self._entities.get(entity_id)
        if state is None:
            data = self._get(self._key("f", entity_id))
            state = self._entity_spec.new() if data is None else self._entity_spec.load(data)
            self._entities[entity_id] = state
        return state

    # -- outputs --------------------------------------------------------------------

    def _reject(
        self, topic: str, offset: int, key: bytes | None, raw: bytes | None, exc: RecordError
    ) -> None:
        self._count(f"{REJECTED}{topic}.{exc.reason.value}")
        self.health.observe_reject(exc.reason.value)
        if (topic, offset) in self.emitted_deadletters:
            return
        self.batch.deadletters.append(
            Deadletter(key, raw, exc.reason, exc.detail, topic, self.partition, offset)
        )

    def _emit(
        self,
        event_id: str,
        record: dict[str, Any],
        label: float,
        observed: bool,
        label_ts: datetime | None,
    ) -> None:
        self._count("examples")
        self._count("examples_labelled" if observed else "examples_defaulted")
        self._count("examples_served" if record.get("o") == SERVED else "examples_recomputed")
        self.health.observe_example(observed)
        if event_id in self.emitted_examples:
            return
        example = Example(
            event_id=event_id,
            entity_id=record["en"],
            ts=datetime.fromtimestamp(record["ts"], UTC),
            features=record["f"],
            label=label,
            label_observed=observed,
            label_ts=label_ts,
            imputed=tuple(record["i"]),
        )
        self.batch.examples.append((event_id, record["en"].encode(), example.to_json()))

    # -- records --------------------------------------------------------------------

    def _next(self, topic: str, offset: int, key: bytes | None, raw: bytes | None) -> bool:
        """Whether ``offset`` is the next record to apply (then it counts as applied).

        Records already applied (a replay after a crash or a rebalance) are skipped, and
        so is a record ahead of a gap (faust may hand over a prefetched record first):
        the gap is reported by :meth:`take_gaps` so the worker seeks back to it.
        """
        if topic not in self._started:
            raise RuntimeError(f"partition {self.partition}: {topic} read before start()")
        applied = self.applied[topic]
        if offset != applied + 1:
            if offset <= applied:
                self._behind.add(topic)
            elif topic not in self._gaps:
                self._gaps.add(topic)
                log.warning(
                    "partition %d: %s offset %d is ahead of %d; seeking back",
                    self.partition,
                    topic,
                    offset,
                    applied + 1,
                )
            return False
        self.applied[topic] = offset
        self.tips[topic] = fingerprint(key, raw)
        return True

    def on_event(self, offset: int, key: bytes | None, raw: bytes | None, now: datetime) -> None:
        if not self._next(EVENTS, offset, key, raw):
            return
        self._count("events")
        try:
            event, features, imputed = self._decoder.event(key, raw, now)
        except RecordError as exc:
            self._count("deadlettered")
            self._reject(EVENTS, offset, key, raw, exc)
            return
        self._events_read_at = now.timestamp()  # rejected records say nothing of a backlog
        ekey = self._key("e", event.event_id)
        if ekey in self.table:
            self._count("duplicates")
            return
        self.health.observe_event(features, imputed)
        entity = self.entity(event.entity_id)
        computed = entity.values()
        logged = event.served.entity if event.served is not None else None
        if logged is not None:
            self._compare(entity, computed, logged)
        # What serving read is what the model was asked about: the example carries it.
        # The entity's state still learns from the event, so features stay fresh.
        values = computed if logged is None else {**computed, **logged}
        carried: Features = {**features, **values}
        ts = _epoch(event.ts)
        self._event_time = max(self._event_time, ts)
        entity.on_event(ts)
        self._touch(event.entity_id, entity)
        record = {"s": "w", "ts": ts, "en": event.entity_id, "f": carried, "i": list(imputed)}
        if logged is not None:
            record["o"] = SERVED
        self._put(ekey, record)
        self._count("pending")
        heapq.heappush(self._due, (ts + self._horizon, event.event_id))
        orphan = self._get(self._key("l", event.event_id))
        if orphan is not None:
            self._orphans.pop(event.event_id, None)
            self._put(self._key("l", event.event_id), None)
            self._count("labels_waiting", -1)
            self._resolve_label(event.event_id, record, orphan, now)

    def _compare(
        self, entity: EntityState, computed: Features, logged: Mapping[str, FeatureValue]
    ) -> None:
        """Count, by feature, where serving read other values than the streams hold."""
        skewed = skew(computed, logged, known=entity.known)
        self._count("served_compared")
        if skewed:
            self._count("served_skewed")
        for name in skewed:
            self._count(f"{SKEW}{name}")

    def on_label(self, offset: int, key: bytes | None, raw: bytes | None, now: datetime) -> None:
        if not self._next(LABELS, offset, key, raw):
            return
        self._count("labels")
        try:
            label = self._decoder.label(key, raw, now)
        except RecordError as exc:
            self._count("labels_deadlettered")
            self._reject(LABELS, offset, key, raw, exc)
            return
        held: dict[str, Any] = {
            "o": offset,
            "ts": _epoch(label.ts),
            "v": label.label,
            "k": (key or b"").decode(),
            "r": (raw or b"").decode(),
            "at": now.timestamp(),
        }
        self._labels_read_at = now.timestamp()
        self._label_time = max(self._label_time, min(held["ts"], now.timestamp()))
        record = self._get(self._key("e", label.event_id))
        if record is None:
            okey = self._key("l", label.event_id)
            if okey in self.table:
                self._count("labels_duplicates")
                return
            self._put(okey, held)
            self._count("labels_waiting")
            self._orphans[label.event_id] = (held["ts"], held["at"])
            return
        self._resolve_label(label.event_id, record, held, now)

    def _resolve_label(
        self, event_id: str, record: dict[str, Any], held: dict[str, Any], now: datetime
    ) -> None:
        if record["s"] == "w" and held["ts"] > record["ts"] + self._late_after:
            self._expire(event_id, record, now)
            record = self._get(self._key("e", event_id)) or record
        if record["s"] == "w":
            label_ts = datetime.fromtimestamp(held["ts"], UTC)
            self._emit(event_id, record, held["v"], True, label_ts)
            self._resolved(event_id, "l", record["ts"], now)
            self._count("pending", -1)
            self._count("labels_joined")
            entity = self.entity(record["en"])
            entity.on_label(held["ts"], held["v"])
            self._touch(record["en"], entity)
        elif record["s"] == "l":
            self._count("labels_duplicates")
        else:
            self._count("labels_deadlettered")
            self._count("labels_late")
            exc = RecordError(Reason.EXPIRED_EVENT, f"event {event_id} passed its label horizon")
            self._reject(LABELS, held["o"], held["k"].encode(), held["r"].encode(), exc)

    def _expire(self, event_id: str, record: dict[str, Any], now: datetime) -> None:
        self._count("pending", -1)
        label = self.spec.label
        if label.on_missing == "default" and label.default is not None:
            self._emit(event_id, record, float(label.default), False, None)
        else:
            self._count("dropped")
        self._resolved(event_id, "h", record["ts"], now)

    def _resolved(self, event_id: str, how: str, ts: float, now: datetime) -> None:
        """Replace a waiting event by the marker that recognises it again."""
        until = max(ts + self._dedup_seconds, now.timestamp() + self._horizon)
        self._put(self._key("e", event_id), {"s": how, "u": until})
        heapq.heappush(self._gc, (until, event_id))

    def tick(self, now: datetime) -> None:
        """Apply the label horizon, forget old markers and idle entities, give up on orphan
        labels."""
        t = now.timestamp()
        self._evict_idle()
        # An event's horizon passes once labels read on this partition are past it, or
        # once no label was read for a while: a backlog of labels still being read (after
        # a restart, a lagging worker) may hold its label.
        if self._labels_read_at is None:
            self._labels_read_at = t
        if self._events_read_at is None:
            self._events_read_at = t
        labels_quiet = t - self._labels_read_at > ORPHAN_GRACE
        while self._due and self._due[0][0] < t and not self.full:
            if not labels_quiet and self._due[0][0] + ORPHAN_GRACE >= self._label_time:
                break
            _, event_id = heapq.heappop(self._due)
            record = self._get(self._key("e", event_id))
            if record is not None and record["s"] == "w":
                self._expire(event_id, record, now)
        while self._gc and self._gc[0][0] < t and not self.full:
            _, event_id = heapq.heappop(self._gc)
            record = self._get(self._key("e", event_id))
            if record is not None and record["s"] != "w" and _forget_at(record) < t:
                self._put(self._key("e", event_id), None)
        # A waiting label gives up once events read on this partition are well past its
        # time, or once no event was read for a horizon after it came: while a backlog of
        # events is still being read (the labels may be read ahead of it), it waits.
        patience = max(ORPHAN_GRACE, self._horizon)
        for event_id, (label_ts, arrived) in list(self._orphans.items()):
            if self.full:
                return  # the rest on the next tick, after this commit
            quiet_since = max(arrived, self._events_read_at)
            if label_ts + ORPHAN_GRACE >= self._event_time and quiet_since + patience >= t:
                continue
            del self._orphans[event_id]
            okey = self._key("l", event_id)
            held = self._get(okey)
            if held is None:
                continue
            self._put(okey, None)
            self._count("labels_waiting", -1)
            self._count("labels_deadlettered")
            exc = RecordError(Reason.UNKNOWN_EVENT, f"no event {event_id} on this partition")
            self._reject(LABELS, held["o"], held["k"].encode(), held["r"].encode(), exc)

    # -- commit ---------------------------------------------------------------------

    def _touch(self, entity_id: str, state: EntityState) -> None:
        """Record a change of the entity's state (at once, so the batch's size is known)."""
        self.batch.entities.add(entity_id)
        self._put(self._key("f", entity_id), state.data)

    def feature_rows(self) -> list[tuple[str, dict[str, FeatureValue], datetime]]:
        """The online-store rows of the entities this batch touched."""
        rows = []
        for entity_id in self.batch.entities:
            state = self.entity(entity_id)
            rows.append((entity_id, state.values(), state.as_of))
            if entity_id not in self._queued:
                self._queued.add(entity_id)
                heapq.heappush(
                    self._idle, (float(state.data.get("t", 0.0)) + self._keep, entity_id)
                )
        return rows

    def _evict_idle(self) -> None:
        """Drop the state of entities idle past every window (by this partition's event time)."""
        while self._idle and self._idle[0][0] < self._event_time and not self.full:
            _, entity_id = heapq.heappop(self._idle)
            key = self._key("f", entity_id)
            data = self._get(key)
            if data is None:
                self._queued.discard(entity_id)
                continue
            due = float(data.get("t", 0.0)) + self._keep
            if entity_id in self.batch.entities or due >= self._event_time:
                # Not idle yet (or changed in this batch): looked at again when due.
                heapq.heappush(self._idle, (max(due, self._event_time), entity_id))
                continue
            self._entities.pop(entity_id, None)
            self._queued.discard(entity_id)
            self._put(key, None)
            self._count("entities_evicted")

    def to_changelog(self, outputs: dict[str, int]) -> list[tuple[bytes, bytes | None]]:
        """What the changelog gets for this batch, in order: every changed key once (and
        the keys put back on restore), then the commit record.

        The batch stays open (and can be rolled back) until :meth:`committed`.
        """
        self.outputs.update(outputs)
        ckey = commit_key(self.partition)
        if ckey not in self.batch.undo:
            self.batch.undo[ckey] = self.table.get(ckey)
        record = {
            "lineage": self.lineage,
            "seq": self.seq + 1,
            "tips": self.tips,
            "applied": self.applied,
            "outputs": self.outputs,
            "counts": self.counts,
        }
        raw = orjson.dumps(record)
        self.table[ckey] = raw
        writes = {**self.rewrite, **self.batch.changes}
        writes.pop(ckey, None)
        return [*writes.items(), (ckey, raw)]

    def committed(self) -> None:
        """The keys and the commit record are durable: start the next batch."""
        self.seq += 1
        self.rewrite = {}
        self.batch = Batch()

    @property
    def full(self) -> bool:
        """The batch should be committed before it takes more (see BATCH_BUDGET)."""
        return self.batch.size > BATCH_BUDGET

    @property
    def dirty(self) -> bool:
        b = self.batch
        return bool(b.changes or b.examples or b.deadletters or b.entities or self.rewrite)
