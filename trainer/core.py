"""The trainer: consume ``examples``, learn test-then-train, checkpoint, obey ``control``.

Drive it in-process with ``start()``, ``step()`` as often as you like, ``close()``;
``trainer.main.run`` does exactly that in a process. State lives in memory between
checkpoints and only a checkpoint makes it durable: position (next offset per
partition), model, metrics, lineage, recently handled event ids. On start the newest
verified checkpoint is restored and the consumer seeks to its offsets, whatever the
group committed, so a crash anywhere neither relearns nor skips an example.

One trainer per model version runs at a time: ``start()`` first takes the version's
lease (:mod:`loopline.lease`), waiting up to one TTL for a crashed holder's to lapse,
and raises :class:`~loopline.errors.LeaseHeld` naming a live holder. Each step renews
it; a trainer that finds it taken over raises :class:`~loopline.errors.LeaseLost` and
writes no checkpoint from then on. Every checkpoint is written only after the lease
was confirmed, and discarded if the writer was paused past the TTL while writing.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from loopline.contracts import CheckpointManifest, Command, CommandKind
from loopline.control_state import ControlState
from loopline.errors import CheckpointError, LeaseLost, SpecError
from loopline.heartbeat import Heartbeat
from loopline.kafka import STATS_INTERVAL_MS, consumer_config, producer_config
from loopline.lease import Lease, trainer_lease_name
from loopline.settings import Settings
from loopline.spec import Spec
from loopline.windows import ExcludedWindows
from trainer.batch import fetch, learn_batch
from trainer.checkpointer import Checkpointer, new_lineage, replay_lineage
from trainer.commands import ControlFeed
from trainer.exporter import Exporter
from trainer.learner import Learner
from trainer.metrics import check_names
from trainer.replay import replay

log = logging.getLogger(__name__)

# A long replay must not cost the trainer its place in the group.
MAX_POLL_INTERVAL_MS = 30 * 60 * 1000


class Trainer:
    """One model's incremental trainer."""

    def __init__(
        self,
        settings: Settings,
        spec: Spec | None = None,
        *,
        batch_size: int = 2000,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.spec = spec or settings.load_spec()
        try:
            check_names(self.spec.training.metrics, self.spec.label.kind)
        except ValueError as exc:
            raise SpecError(settings.spec, "training.metrics", str(exc)) from None
        self.topic = settings.topic("examples")
        self.batch_size = batch_size
        self.exporter = Exporter(self.spec.name, registry)
        self.windows = ExcludedWindows()
        self.paused = False
        self.position: dict[int, int] = {}
        self.parent: CheckpointManifest | None = None
        self.lineage = new_lineage()
        self._producer = Producer(producer_config(settings))
        self.checkpointer = Checkpointer(settings, self.spec, self._producer)
        self.learner = Learner(
            self.spec, None, self.windows, holdout_key=self.checkpointer.holdout_key
        )
        self._feed = ControlFeed(settings, self.spec.name, self.exporter.registry)
        self._heartbeat = Heartbeat(settings, f"trainer.{self.spec.name}")
        self.lease = Lease(
            settings,
            trainer_lease_name(self.spec.name, self.spec.spec_version),
            settings.trainer_lease_seconds,
        )
        # A step waits on the broker at most this long a call, so a broker that does not
        # answer never holds it past the lease's TTL (the lease would lapse under it).
        self._broker_wait = min(10.0, self.lease.ttl / 6)
        self._applied: deque[str] = deque(maxlen=500)
        self._refused: deque[tuple[str, str]] = deque(maxlen=100)  # (command id, why)
        self._marks = ControlState(self.spec.name)
        self._consumer: Consumer | None = None
        self._assigned: list[TopicPartition] = []
        self._committed: dict[int, int] = {}
        self._since_checkpoint = 0
        self._dirty = False
        self._last_checkpoint = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Take the lease, rebuild control state, restore the newest good checkpoint,
        join the group."""
        # Only the holder may read the newest checkpoint as its own and join the group.
        self.lease.acquire(wait=self.lease.ttl + 0.5)
        replays: list[Command] = []
        for command in self._feed.catch_up():
            if command.kind is CommandKind.REPLAY:
                replays.append(command)
            else:
                self._apply(command)
        self._take_refused()
        restored = self.checkpointer.restore(self.windows)
        if restored is None:
            self.learner = Learner(
                self.spec,
                self.spec.build_model(),
                self.windows,
                holdout_key=self.checkpointer.holdout_key,
            )
            log.info("no checkpoint of %s: fresh model, lineage %s", self.spec.name, self.lineage)
        else:
            self.learner = restored.learner
            self.parent = restored.manifest
            self.lineage = restored.manifest.lineage
            self.position = dict(restored.manifest.offsets)
            log.info(
                "resumed %s from %s at %s",
                self.spec.name,
                restored.manifest.checkpoint_id,
                self.position,
            )
            self.checkpointer.announce(restored.manifest)
        self.exporter.count_from(self.learner.counts)
        if replays and self._replay_pending(replays[-1]):
            why = self._replay(replays[-1])
            if why is not None:
                self._refused.append((replays[-1].command_id, why))
        config = consumer_config(
            self.settings,
            group_id=f"{self.settings.topic_prefix}trainer.{self.spec.name}",
            **{
                "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
                "statistics.interval.ms": STATS_INTERVAL_MS,
                "stats_cb": self.exporter.kafka_stats,
            },
        )
        self._consumer = Consumer(config)
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.exporter.state(self.paused, len(tuple(self.windows)))
        self._beat(force=True)

    def step(self, timeout: float = 0.5) -> int:
        """Apply new commands, learn one batch, checkpoint if due; return records handled."""
        assert self._consumer is not None, "call start() first"
        commands = self._feed.poll()
        for command in commands:
            self._apply(command)
        refused = self._take_refused()
        messages = fetch(self._consumer, self.batch_size, timeout)
        self.lease.keep()  # after the wait: a trainer paused in it learns nothing more
        handled = 0
        if self.paused:
            self._rewind(messages)
        elif messages:
            handled = learn_batch(self.learner, messages, self.position)
            self._since_checkpoint += handled
            self._dirty = self._dirty or handled > 0
            self.exporter.counts(self.learner.counts)
        self._maybe_checkpoint()
        self._beat(force=bool(commands) or refused)
        return handled

    def close(self) -> None:
        """Checkpoint what is unsaved (if the lease is still ours), leave the group,
        release the lease and the clients."""
        try:
            if self._consumer is not None and self.lease.holder is not None:
                self.checkpoint()
            elif self._dirty:
                log.error("not checkpointing: the lease is not ours; unsaved work is dropped")
        finally:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
            self._feed.close()
            self._heartbeat.close()
            self._producer.flush(10)
            self.checkpointer.close()
            self.lease.release()
            self.lease.close()

    # -- checkpoints -------------------------------------------------------------------

    def _maybe_checkpoint(self) -> None:
        training = self.spec.training
        due = self._since_checkpoint >= training.snapshot_every_examples or (
            time.monotonic() - self._last_checkpoint >= training.snapshot_every_seconds
        )
        if due and self._dirty:
            self.checkpoint()

    def checkpoint(self) -> CheckpointManifest | None:
        """Confirm the lease -> save -> commit offsets -> announce -> prune. None if
        nothing changed, or Redis could not confirm the lease (tried again later)."""
        if not self._dirty:
            return None
        if not self.lease.confirm():
            return None
        manifest = self.checkpointer.save(
            self.learner, self.position, self.parent, self.lineage, self.lease.holder
        )
        if not self.lease.held:  # paused while writing, past the TTL: is it still ours?
            try:
                self.lease.confirm()
            except LeaseLost:
                self.checkpointer.discard(manifest.checkpoint_id)
                raise
        self._commit(manifest.offsets)
        self.checkpointer.announce(manifest, timeout=self._broker_wait)
        self.checkpointer.prune(manifest.checkpoint_id)
        self.parent = manifest
        self._since_checkpoint = 0
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        self.exporter.checkpoint(manifest, self.learner.metrics)
        return manifest

    def _commit(self, offsets: dict[int, int]) -> None:
        """Commit the checkpoint's offsets for our partitions, never moving one backwards."""
        if self._consumer is None:
            return
        assigned = {tp.partition for tp in self._assigned}
        unknown = [TopicPartition(self.topic, p) for p in assigned if p not in self._committed]
        try:
            if unknown:
                for tp in self._consumer.committed(unknown, timeout=self._broker_wait):
                    self._committed[tp.partition] = tp.offset
            commits = []
            for partition, offset in offsets.items():
                if partition not in assigned or offset == self._committed.get(partition):
                    continue
                if offset < self._committed.get(partition, -1):
                    log.warning(
                        "not committing partition %d back from %d to %d",
                        partition,
                        self._committed[partition],
                        offset,
                    )
                    continue
                commits.append(TopicPartition(self.topic, partition, offset))
            if commits:
                # Not waited for: the checkpoint holds the position, and a broker that does
                # not answer must not hold the step past the lease.
                self._consumer.commit(offsets=commits, asynchronous=True)
                self._committed.update({tp.partition: tp.offset for tp in commits})
        except KafkaException as exc:
            log.warning("offset commit failed (the checkpoint holds the position): %s", exc)

    # -- consumer group ----------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            tp.offset = self.position.get(tp.partition, OFFSET_BEGINNING)
        consumer.assign(partitions)
        if self.paused:
            consumer.pause(partitions)
        self._assigned = list(partitions)
        log.info("assigned %s", {tp.partition: tp.offset for tp in partitions})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = []
        self._committed.clear()
        log.info("revoked %s", [tp.partition for tp in partitions])

    def _rewind(self, messages: list[Any]) -> None:
        """Paused: a record that still arrives is put back, never learned nor skipped."""
        assert self._consumer is not None
        rewound: set[int] = set()
        for msg in messages:
            partition = msg.partition()
            if msg.error() is not None or partition in rewound:
                continue
            rewound.add(partition)
            offset = self.position.get(partition, msg.offset())
            log.warning("record arrived while paused; seeking %d back to %d", partition, offset)
            try:
                self._consumer.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException as exc:
                log.error("could not seek partition %d back: %s", partition, exc)

    # -- control -----------------------------------------------------------------------

    def _take_refused(self) -> bool:
        """List the Commands the feed refused in the heartbeat; whether there were any."""
        refused = self._feed.take_refused()
        self._refused.extend((r.command.command_id, r.why) for r in refused)
        return bool(refused)

    def _apply(self, command: Command) -> None:
        """Apply one command; heartbeats list it as applied, or as refused with why."""
        kind, why = command.kind, None
        if kind is CommandKind.PAUSE:
            self.pause()
        elif kind is CommandKind.RESUME:
            self.resume()
        elif kind in (CommandKind.MARK_ANOMALOUS, CommandKind.CLEAR_ANOMALOUS):
            why = self._fence(command)
        elif kind is CommandKind.REPLAY:
            why = self._replay(command)
        if why is not None:
            self._refused.append((command.command_id, why))
            return
        self._applied.append(command.command_id)
        self.exporter.state(self.paused, len(tuple(self.windows)))

    def _fence(self, command: Command) -> str | None:
        """Mark or clear an anomalous window; why not if it names no window or mark.

        The windows excluded are the union of the marks in force, so clearing one mark
        leaves an overlapping one excluded.
        """
        before = dict(self._marks.marks)
        self._marks.apply(command)
        if self._marks.marks == before:
            why = "no anomalous window changes (a malformed window, or no such mark in force)"
            log.error("ignoring %s %s: %s", command.kind.value, command.command_id, why)
            return why
        self.windows.reset(self._marks.excluded)
        log.info("%s %s: now %s", command.kind.value, command.command_id, self.windows)
        return None

    def _beat(self, force: bool = False) -> None:
        """Tell ``loopline status`` (and operators waiting on a command) where we are."""
        if not force and not self._heartbeat.due():  # built once a second, not per batch
            return
        last = self.parent
        self._heartbeat.beat(
            {
                "model": self.spec.name,
                "spec_version": self.spec.spec_version,
                "paused": self.paused,
                "windows": [[w.start, w.end] for w in self.windows],
                "lineage": self.lineage,
                "checkpoint": last.checkpoint_id if last is not None else None,
                "checkpoint_at": last.created_at if last is not None else None,
                "position": self.position,
                "lease": self._lease_state(),
                "applied": list(self._applied),
                "refused_commands": dict(self._refused),
            },
            force=force,
        )

    def _lease_state(self) -> dict[str, Any] | None:
        holder = self.lease.holder
        if holder is None:
            return None
        return {"host": holder.host, "pid": holder.pid, "since": holder.since}

    def pause(self) -> None:
        """Stop learning, keep the position and the group membership; checkpoint."""
        if self.paused:
            return
        self.paused = True
        if self._consumer is not None and self._assigned:
            self._consumer.pause(self._assigned)
            self.checkpoint()
        log.info("training paused")

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if self._consumer is not None and self._assigned:
            self._consumer.resume(self._assigned)
        log.info("training resumed")

    def _replay_pending(self, command: Command) -> bool:
        """A replay runs once: not if its lineage exists or a checkpoint came after it."""
        lineage = replay_lineage(command.command_id)
        if self.parent is not None and self.parent.created_at >= command.issued_at:
            return False
        return all(m.lineage != lineage for m in self.checkpointer.store.manifests(self.spec.name))

    def _replay(self, command: Command) -> str | None:
        """Relearn from an earlier checkpoint up to the current position, as a new lineage;
        why not if it cannot."""
        source = str(command.args.get("from", ""))
        try:
            restored = self.checkpointer.load(source, self.windows)
        except CheckpointError as exc:
            log.error("replay %s refused: %s", command.command_id, exc)
            return f"cannot replay from {source}: {exc}"
        consumer, was_paused = self._consumer, self.paused
        if consumer is not None and self._assigned and not was_paused:
            consumer.pause(self._assigned)
        try:
            target = dict(self.position)
            replay(
                self.settings,
                restored.learner,
                dict(restored.manifest.offsets),
                target,
                keep_alive=self.lease.keep,
            )
        except CheckpointError as exc:
            log.error("replay %s from %s failed: %s", command.command_id, source, exc)
            return f"replay from {source} failed: {exc}"
        finally:
            if consumer is not None and self._assigned and not was_paused:
                consumer.resume(self._assigned)
        self.learner = restored.learner
        self.exporter.count_from(self.learner.counts)
        self.parent = restored.manifest
        self.lineage = replay_lineage(command.command_id)
        self._dirty = True
        manifest = self.checkpoint()
        log.info(
            "replayed from %s: new lineage %s, checkpoint %s",
            source,
            self.lineage,
            manifest.checkpoint_id if manifest else None,
        )
        return None
