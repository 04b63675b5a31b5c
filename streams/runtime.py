"""What a streams worker does with each batch of records, outside faust's own machinery.

Per batch: process records per partition, apply the label horizon, then commit
(outputs acknowledged, then the partition's commit record and state changes, see
:mod:`streams.partition`), then publish accounting, metrics and online features.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from datetime import datetime
from typing import Any

import redis

from feature_repo.online import OnlineFeatures
from loopline import accounting
from loopline.contracts import CommandKind, FeatureValue, utcnow
from loopline.control import make_command, send
from loopline.heartbeat import Heartbeat
from loopline.settings import Settings
from loopline.spec import Spec
from streams import metrics
from streams.health import HealthMonitor
from streams.outputs import (
    SOURCE_PARTITION,
    Sink,
    deadletter_headers,
    emitted_deadletters,
    emitted_examples,
    read_back,
)
from streams.partition import EVENTS, LABELS, PartitionState

log = logging.getLogger("loopline.streams")

FEATURE_FLUSH_ROWS = 5000
FEATURE_FLUSH_SECONDS = 0.25
Record = tuple[str, int, int, bytes | None, bytes | None]  # topic, partition, offset, key, value
Seek = Callable[[str, int, int], Awaitable[None]]  # topic, partition, next offset


class Runtime:
    """The state of one worker: its partitions, its producer, its feature writer."""

    def __init__(
        self,
        settings: Settings,
        spec: Spec,
        table: MutableMapping[bytes, bytes],
        changelog: str,
        seek: Seek,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.table = table
        self.changelog = changelog
        self._seek = seek
        self.topics = {settings.topic(EVENTS): EVENTS, settings.topic(LABELS): LABELS}
        self.topics_by_name = {name: topic for topic, name in self.topics.items()}
        self.examples_topic = settings.topic("examples")
        self.deadletter_topic = settings.topic("deadletter")
        self.health = HealthMonitor(spec, time.time())
        self._heartbeat: Heartbeat | None = None
        self.partitions: dict[int, PartitionState] = {}
        self.lock = asyncio.Lock()
        self._sink: Sink | None = None
        self._online: OnlineFeatures | None = None
        self._redis: redis.Redis | None = None
        self._rows: dict[str, tuple[str, dict[str, FeatureValue], datetime]] = {}
        self._flushed_at = time.monotonic()
        self._writing: asyncio.Future[None] | None = None

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

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.settings.redis_url)
        return self._redis

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- partitions -----------------------------------------------------------------

    def _out(self, topic: str, partition: int) -> int:
        return partition % self.sink.partitions(topic)

    async def partition(self, p: int) -> PartitionState:
        state = self.partitions.get(p)
        if state is None:
            state = PartitionState(p, self.spec, self.table, self.health)
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
            self.partitions[p] = state
            log.info(
                "partition %d ready: %d outputs found past its last commit",
                p,
                len(examples) + len(deadletters),
            )
        return state

    async def _heal_gaps(self, states: Iterable[PartitionState]) -> None:
        """Seek back where a partition saw a record ahead of the next one it needs."""
        for state in states:
            for name in state.take_gaps():
                await self._seek(
                    self.topics_by_name[name], state.partition, state.applied[name] + 1
                )

    async def revoke(self, partitions: Iterable[int]) -> None:
        async with self.lock:
            for p in partitions:
                self.partitions.pop(p, None)

    # -- processing -----------------------------------------------------------------

    async def process(self, records: Iterable[Record]) -> None:
        async with self.lock:
            now = utcnow()
            touched: dict[int, PartitionState] = {}
            for topic, p, offset, key, value in records:
                state = touched.get(p) or await self.partition(p)
                touched[p] = state
                if self.topics.get(topic) == EVENTS:
                    state.on_event(offset, key, value, now)
                else:
                    state.on_label(offset, key, value, now)
            for state in touched.values():
                state.tick(now)
            # Committed before faust acks the batch, so its offsets never pass durable state.
            await self._commit([s for s in touched.values() if s.dirty])
            await self._heal_gaps(touched.values())

    async def tick(self, assigned: Iterable[int] = ()) -> None:
        """Take up newly assigned partitions, apply the horizon on quiet ones, close health
        windows, flush features."""
        async with self.lock:
            for p in assigned:
                await self.partition(p)
            now = utcnow()
            for state in self.partitions.values():
                state.tick(now)
            await self._commit([s for s in self.partitions.values() if s.dirty])
            self._flush_features(force=True)

    async def _commit(self, states: list[PartitionState]) -> None:
        if not states:
            await self._watch_health()
            return
        sink = self.sink
        for state in states:
            p = state.partition
            batch = state.batch
            ex_part = self._out(self.examples_topic, p)
            header = [(SOURCE_PARTITION, str(p).encode())]
            for i, (_, key, value) in enumerate(batch.examples):
                sink.produce(
                    self.examples_topic,
                    ex_part,
                    key,
                    value,
                    header,
                    track=i == len(batch.examples) - 1,
                )
            dl_part = self._out(self.deadletter_topic, p)
            for i, d in enumerate(batch.deadletters):
                last = i == len(batch.deadletters) - 1
                sink.produce(
                    self.deadletter_topic,
                    dl_part,
                    d.key,
                    d.value,
                    deadletter_headers(d, self.settings),
                    track=last,
                )
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
            ckey, record, changes = state.commit_record(positions)
            sink.produce(self.changelog, p, ckey, record)
            for state_key, state_value in changes:
                sink.produce(self.changelog, p, state_key, state_value)
        await self._run(sink.flush)
        counts = {s.partition: s.counts for s in states}
        accounting.write(self.redis, self.settings, counts)
        metrics.record_counts(counts)
        self._flush_features()
        await self._watch_health()

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
        if self._heartbeat is None or self._heartbeat.due():  # no executor hop per batch
            await self._run(self._beat)
        if evidence is None or not self.spec.health.auto_pause:
            return
        evidence["partitions"] = sorted(self.partitions)
        checks = ", ".join(b["check"] for b in evidence["breaches"])
        command = make_command(
            CommandKind.PAUSE,
            scope="*",
            reason=f"data health breach: {checks}",
            evidence=evidence,
            issued_by="streams.health",
        )
        await self._run(send, self.settings, command)
        metrics.AUTO_PAUSES.inc()
        log.warning("auto-pause sent (%s): %s", command.command_id, command.reason)

    def _beat(self) -> None:
        if self._heartbeat is None:
            name = f"streams.{os.uname().nodename}-{os.getpid()}"
            self._heartbeat = Heartbeat(self.settings, name)
        self._heartbeat.beat(
            {
                "partitions": sorted(self.partitions),
                "health": self.health.verdict(),
                "last_window": self.health.last,
            }
        )

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.close()
        if self._rows:
            self._write_features(list(self._rows.values()))
        if self._sink is not None:
            self._sink.close()
        if self._online is not None:
            self._online.close()
        if self._redis is not None:
            self._redis.close()
