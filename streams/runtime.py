"""What a streams worker does with each batch of records, outside faust's own machinery.

Per batch: process records per partition, apply the label horizon, then commit
(outputs acknowledged, then the partition's state changes and its commit record, see
:mod:`streams.partition`), then hand accounting, metrics and online features to the
background. Faust does not commit the source offsets (the source topics are not
acked); the worker commits them itself, after the outputs are durable and before the
commit record, through the consumer group, so the broker refuses the commit of a
worker that lost the partition and that worker writes nothing more for it.

Whatever raises in a batch, the batch is undone (:meth:`PartitionState.rollback`),
the partition is read again from its last commit, and the worker keeps running,
retrying with backoff and reporting itself degraded meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from datetime import datetime
from typing import Any

from feature_repo.online import OnlineFeatures
from loopline.accounting import Stamped
from loopline.contracts import Command, CommandKind, FeatureValue, utcnow
from loopline.control import issue, send
from loopline.settings import Settings
from loopline.spec import Spec
from streams import metrics
from streams.changelog import Tails, commit_key
from streams.health import HealthMonitor
from streams.outputs import (
    SOURCE_PARTITION,
    Sink,
    deadletter_record,
    emitted_deadletters,
    emitted_examples,
    log_start,
    read_back,
    record_at,
)
from streams.partition import EVENTS, LABELS, PartitionState, fingerprint
from streams.reporting import Reporter

log = logging.getLogger("loopline.streams")

FEATURE_FLUSH_ROWS = 5000
FEATURE_FLUSH_SECONDS = 0.25
RETRY_MAX_SECONDS = 30.0
Record = tuple[str, int, int, bytes | None, bytes | None]  # topic, partition, offset, key, value
Seek = Callable[[str, int, int], Awaitable[None]]  # topic, partition, next offset
# Commits source offsets through the consumer group; raises if this member lost them.
CommitOffsets = Callable[[Mapping[tuple[str, int], int]], Awaitable[None]]
Owned = Callable[[], set[int] | None]  # partitions held now; None: no group (tests)


class Fenced(Exception):
    """This worker no longer owns a partition it was about to commit."""


class Runtime:
    """The state of one worker: its partitions, its producer, its feature writer."""

    def __init__(
        self,
        settings: Settings,
        spec: Spec,
        table: MutableMapping[bytes, bytes],
        changelog: str,
        seek: Seek,
        commit_offsets: CommitOffsets | None = None,
        owned: Owned | None = None,
        ready: Callable[[], bool] | None = None,
        tails: Tails | None = None,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.table = table
        self.changelog = changelog
        self._seek = seek
        self._commit_offsets = commit_offsets
        self._owned = owned or (lambda: None)
        self._ready = ready or (lambda: True)
        self.tails = tails or Tails()  # what the changelog's replay left uncommitted
        self.topics = {settings.topic(EVENTS): EVENTS, settings.topic(LABELS): LABELS}
        self.topics_by_name = {name: topic for topic, name in self.topics.items()}
        self.examples_topic = settings.topic("examples")
        self.deadletter_topic = settings.topic("deadletter")
        self.health = HealthMonitor(spec, time.time())
        self.partitions: dict[int, PartitionState] = {}
        self.lock = asyncio.Lock()
        self.reporter = Reporter(settings)
        self._sink: Sink | None = None
        self._online: OnlineFeatures | None = None
        self._rows: dict[str, tuple[str, dict[str, FeatureValue], datetime]] = {}
        self._flushed_at = time.monotonic()
        self._writing: asyncio.Future[None] | None = None
        self._beat_at = float("-inf")
        self._pause: Command | None = None
        self._sending: asyncio.Future[None] | None = None
        self.failing: dict[str, str] = {}  # "batch" / "tick": the last error, while failing
        self._failures: dict[str, int] = {}  # consecutive failures of each
        self._carry: dict[int, dict[bytes, bytes | None]] = {}  # see _drop

    @property
    def sink(self) -> Sink:
        if self._sink is None:
            self._sink = Sink(self.settings)
        return self._sink

    @property
    def online(self) -> OnlineFeatures:
        if self._online is None:
            self._online = OnlineFeatures(self.settings, self.spec)
        return self._online

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- partitions -----------------------------------------------------------------

    def _out(self, topic: str, partition: int) -> int:
        return partition % self.sink.partitions(topic)

    async def partition(self, p: int) -> PartitionState:
        """The partition's state, built from its last commit and positioned there."""
        state = self.partitions.get(p)
        if state is None:
            tail = self.tails.take(p)
            if tail:
                log.warning(
                    "partition %d: %d keys written after its last commit put back as of it",
                    p,
                    len(tail),
                )
            state = PartitionState(p, self.spec, self.table, self.health, tail)
            try:
                examples = await self._run(
                    read_back,
                    self.settings,
                    self.examples_topic,
                    self._out(self.examples_topic, p),
                    p,
                    state.outputs.get("examples"),
                )
                deadletters = await self._run(
                    read_back,
                    self.settings,
                    self.deadletter_topic,
                    self._out(self.deadletter_topic, p),
                    p,
                    state.outputs.get("deadletter"),
                )
                state.suppress(
                    emitted_examples(examples), emitted_deadletters(deadletters, self.settings)
                )
                for name, topic in self.topics_by_name.items():
                    low = await self._run(log_start, self.settings, topic, p)
                    await self._seek(topic, p, state.start(name, low))
                    await self._check_log(state, name)
            except Exception:
                self._drop([state])  # the keys its restore put back are still to be written
                raise
            state.rewrite.update(self._carry.pop(p, {}))
            self.partitions[p] = state
            log.info(
                "partition %d ready at events %d, labels %d: %d outputs found past its last commit",
                p,
                state.applied[EVENTS] + 1,
                state.applied[LABELS] + 1,
                len(examples) + len(deadletters),
            )
        return state

    async def _heal(self, states: Iterable[PartitionState]) -> None:
        """Seek back where a partition saw a record ahead of the next one it needs, and
        check the log where it saw one behind (the log may have been reset)."""
        for state in states:
            gaps, behind = state.take_gaps()
            for name in gaps:
                await self._seek(
                    self.topics_by_name[name], state.partition, state.applied[name] + 1
                )
            for name in behind:
                await self._check_log(state, name)

    async def _check_log(self, state: PartitionState, name: str) -> None:
        """A record already applied came again: a replay, or a log that was replaced.

        The log still holds the last applied record unless it was recreated or the broker
        lost its data; then the partition reads the new log from its start.
        """
        tip = state.tips.get(name)
        if tip is None:  # nothing applied, or the log's start moved past it (retention)
            return
        topic, p = self.topics_by_name[name], state.partition
        found = await self._run(record_at, self.settings, topic, p, state.applied[name])
        if found is None or fingerprint(*found) != tip:
            low = await self._run(log_start, self.settings, topic, p)
            await self._seek(topic, p, state.reset(name, low))

    async def purge(self, partitions: Iterable[int]) -> None:
        """Forget the table keys of partitions this worker no longer holds: if one comes
        back, its state is recovered from the changelog alone, tombstones included."""
        partitions = list(partitions)
        gone = {f"{p}|".encode() for p in partitions}
        if not gone:
            return
        async with self.lock:
            # Rebuilt from the changelog alone: its replay finds what a failed batch left.
            self.tails.forget(partitions)
            for p in partitions:
                self._carry.pop(p, None)
            for key in [k for k in self.table if k[: k.find(b"|") + 1] in gone]:
                del self.table[key]

    async def revoke(self, partitions: Iterable[int]) -> None:
        async with self.lock:
            for p in partitions:
                state = self.partitions.pop(p, None)
                if state is not None:
                    state.rollback()

    def _drop(self, states: Iterable[PartitionState]) -> None:
        """Undo the open batch of each and forget it: it is rebuilt from its last commit."""
        for state in states:
            # The batch's keys may have landed though its flush failed: they are written
            # again, as of the last commit, before the next commit record (as are the keys
            # its restore put back, not written yet).
            carry = self._carry.setdefault(state.partition, {})
            ckey = commit_key(state.partition)
            for key, raw in [*state.rewrite.items(), *state.batch.undo.items()]:
                if key != ckey:
                    carry.setdefault(key, raw)
            state.rollback()
            if self.partitions.get(state.partition) is state:
                del self.partitions[state.partition]

    # -- processing -----------------------------------------------------------------

    async def process(self, records: Iterable[Record]) -> None:
        """Process one batch; never raises (a failed batch is undone and read again)."""
        touched: dict[int, PartitionState] = {}
        failed: Exception | None = None
        async with self.lock:
            try:
                owned = self._owned() if self._ready() else set()
                now = utcnow()
                for topic, p, offset, key, value in records:
                    if owned is not None and p not in owned:
                        continue  # moving, or revoked: read again once held and recovered
                    state = touched.get(p) or await self.partition(p)
                    touched[p] = state
                    if self.topics.get(topic) == EVENTS:
                        state.on_event(offset, key, value, now)
                    else:
                        state.on_label(offset, key, value, now)
                    if state.full:
                        await self._commit([state])
                for state in touched.values():
                    state.tick(now)
                await self._commit([s for s in touched.values() if s.dirty])
                await self._heal(touched.values())
            except Exception as exc:
                failed = exc
                await self._undo(touched.values())  # under the lock: nothing sees it half-done
        await self._settle("batch", failed)

    async def tick(self, assigned: Iterable[int] = ()) -> None:
        """Take up newly assigned partitions, apply the horizon on quiet ones, close health
        windows, flush features. Never raises; does nothing while faust recovers the
        table (it is replaying the changelog into it)."""
        if not self._ready():
            return
        failed: Exception | None = None
        async with self.lock:
            states: list[PartitionState] = []
            try:
                for p in assigned:
                    await self.partition(p)
                now = utcnow()
                states = list(self.partitions.values())
                for state in states:
                    state.tick(now)
                await self._commit([s for s in states if s.dirty])
                self._flush_features(force=True)
            except Exception as exc:
                failed = exc
                await self._undo(states)
        await self._settle("tick", failed)
        self._report()

    async def _undo(self, states: Iterable[PartitionState]) -> None:
        """Undo a failed batch: a new producer (the old one may have failed fatally:
        fenced, out of sequence), nothing it left queued landing later, and the
        partitions rebuilt from their last commit."""
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                left = await self._run(sink.abandon, self.settings.publish_timeout_seconds + 5)
            except Exception:
                log.exception("abandoning the producer of an undone batch failed")
            else:
                if left:
                    log.error("%d outputs of an undone batch are still unresolved", left)
        self._drop(states)

    async def _settle(self, what: str, exc: Exception | None) -> None:
        """Count a success or a failure of ``what``; back off after a failure."""
        if exc is None:
            if self.failing.pop(what, None) is not None:
                log.info("%s recovered after %d failed attempts", what, self._failures[what])
            self._failures.pop(what, None)
            return
        n = self._failures[what] = self._failures.get(what, 0) + 1
        self.failing[what] = f"{what} failed: {type(exc).__name__}: {exc}"
        metrics.BATCH_FAILURES.inc()
        wait = min(RETRY_MAX_SECONDS, 0.5 * 2 ** min(n - 1, 6))
        if isinstance(exc, Fenced):
            log.warning("%s; its partitions are read again from their last commit", exc)
        else:
            log.error(
                "%s (%d in a row); undone, read again from the last commit in %.1fs",
                self.failing[what],
                n,
                wait,
                exc_info=exc,
            )
        self._report(force=True)
        await asyncio.sleep(wait)

    async def _commit(self, states: list[PartitionState]) -> None:
        if not states:
            await self._watch_health()
            return
        # Fenced before anything leaves: a worker that lost a partition while it was paused
        # learns it here, before it emits a single output for it.
        await self._fence(states)
        sink = self.sink
        for state in states:
            p = state.partition
            batch = state.batch
            ex_part = self._out(self.examples_topic, p)
            header = [(SOURCE_PARTITION, str(p).encode())]
            for _, key, value in batch.examples:
                sink.produce(self.examples_topic, ex_part, key, value, header)
            dl_part = self._out(self.deadletter_topic, p)
            for d in batch.deadletters:
                dl_value, headers = deadletter_record(d, self.settings)
                sink.produce(self.deadletter_topic, dl_part, d.key, dl_value, headers)
        ends = await self._run(sink.flush)
        for state in states:
            p = state.partition
            positions = {}
            if (
                end := ends.get((self.examples_topic, self._out(self.examples_topic, p)))
            ) is not None:
                positions["examples"] = end
            if (
                end := ends.get((self.deadletter_topic, self._out(self.deadletter_topic, p)))
            ) is not None:
                positions["deadletter"] = end
            for row in state.feature_rows():
                self._rows[row[0]] = row
            for state_key, state_value in state.to_changelog(positions):
                sink.produce(self.changelog, p, state_key, state_value)
        await self._run(sink.flush)
        for state in states:
            state.committed()
            self.reporter.counts(
                state.partition, Stamped(state.lineage, state.seq, dict(state.counts))
            )
        metrics.record_counts({s.partition: s.counts for s in states})
        self._flush_features()
        await self._watch_health()

    async def _fence(self, states: list[PartitionState]) -> None:
        """Commit the source offsets through the group: refused if this worker lost them."""
        owned = self._owned()
        lost = [s.partition for s in states if owned is not None and s.partition not in owned]
        if lost:
            raise Fenced(f"partitions {lost} were revoked before their commit")
        if self._commit_offsets is None:
            return
        offsets = {
            (self.topics_by_name[name], s.partition): s.applied[name] + 1
            for s in states
            for name in (EVENTS, LABELS)
            if s.applied[name] >= 0
        }
        if not offsets:
            return  # nothing applied yet (a fresh or reset log): nothing to commit
        try:
            await self._commit_offsets(offsets)
        except Exception as exc:
            if type(exc).__name__ in ("CommitFailedError", "IllegalStateError"):
                raise Fenced(f"the group refused the offsets of {sorted(offsets)}: {exc}") from exc
            raise

    def _flush_features(self, force: bool = False) -> None:
        """Write the coalesced rows in the background, one write at a time.

        Feature state is durable in the table already; the online store is a view of it,
        so its write stays off the commit path.
        """
        if not self._rows or (self._writing is not None and not self._writing.done()):
            return
        due = time.monotonic() - self._flushed_at >= FEATURE_FLUSH_SECONDS
        if force or due or len(self._rows) >= FEATURE_FLUSH_ROWS:
            rows, self._rows = list(self._rows.values()), {}
            self._flushed_at = time.monotonic()
            loop = asyncio.get_running_loop()
            self._writing = loop.run_in_executor(None, self._write_features, rows)

    def _write_features(self, rows: list[tuple[str, dict[str, FeatureValue], datetime]]) -> None:
        try:
            metrics.FEATURE_ROWS.inc(self.online.write(rows))
        except Exception:
            log.exception(
                "online feature write of %d rows failed; they are rewritten on the entities' next change",
                len(rows),
            )

    async def _watch_health(self) -> None:
        evidence = self.health.tick(time.time())
        metrics.record_health(self.health.last)
        self._report()
        await self._send_pause()
        if evidence is None or not self.spec.health.auto_pause:
            return
        evidence["partitions"] = sorted(self.partitions)
        checks = ", ".join(b["check"] for b in evidence["breaches"])
        command = issue(
            self.settings,
            CommandKind.PAUSE,
            scope="*",
            reason=f"data health breach: {checks}",
            evidence=evidence,
            issued_by="streams.health",
        )
        self._pause = command
        await self._send_pause()

    async def _send_pause(self) -> None:
        """Send the pending auto-pause in the background, one attempt at a time; kept and
        retried on a later commit if the broker refuses (the batch is durable already)."""
        if self._pause is None or (self._sending is not None and not self._sending.done()):
            return
        self._sending = asyncio.ensure_future(self._run(self._send, self._pause))

    def _send(self, command: Command) -> None:
        try:
            send(self.settings, command)
        except Exception as exc:
            log.error("auto-pause %s not sent yet, retried: %s", command.command_id, exc)
            return
        if self._pause is command:
            self._pause = None
        metrics.AUTO_PAUSES.inc()
        log.warning("auto-pause sent (%s): %s", command.command_id, command.reason)

    def _report(self, force: bool = False) -> None:
        """The heartbeat, at most once a second: degraded while batches fail."""
        if not force and time.monotonic() - self._beat_at < 1.0:
            return
        self._beat_at = time.monotonic()
        degraded = "; ".join(self.failing.values()) or (
            f"accounting not written: {self.reporter.failing}" if self.reporter.failing else None
        )
        self.reporter.heartbeat(
            {
                "partitions": sorted(self.partitions),
                "health": self.health.verdict(),
                "last_window": self.health.last,
                "degraded": degraded,
                "positions": {
                    str(p): {name: s.applied[name] + 1 for name in (EVENTS, LABELS)}
                    for p, s in sorted(self.partitions.items())
                },
            }
        )

    def close(self) -> None:
        self.reporter.close()
        if self._rows:
            self._write_features(list(self._rows.values()))
        if self._sink is not None:
            self._sink.close()
        if self._online is not None:
            self._online.close()
