"""The pusher's loop: checkpoints in, verdicts and routing changes out.

Three consumers:

- ``checkpoints``, in the pusher's consumer group. An offset is committed only once
  the checkpoint's verdict is in Redis, and a checkpoint with a verdict is never
  judged twice, so a crash re-reads at most what it had not finished. Checkpoints are
  verified with the trainer's public key; each verdict is signed with the pusher's
  private key over the judged manifest's digest (:mod:`loopline.signing.verdicts`).
- the tails of ``examples``, ``predictions`` and ``labels``, assigned without a
  group from the last ``tail_records`` of each partition: the holdout slice and the
  online metrics are rebuilt from the topics on start, nothing else to persist.
- ``control``, in a group of its own: serving Commands (:mod:`pusher.commands`), and
  the windows marked anomalous, which the whole log read on start brings up to date.

A checkpoint is judged on the recent holdout (:mod:`pusher.recent`) and waits (only
the newest of a lineage) until ``min_holdout`` recent examples have settled, or the
cold-start rule lets a first model through (:func:`pusher.qualify.ready`). Every
``tick_seconds`` the ramp driver runs; every
``sweep_seconds`` verdicts on checkpoints pruned from the store are deleted
(:mod:`pusher.retention`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from loopline.checkpoints import CheckpointStore, manifest_sha256
from loopline.contracts import CheckpointManifest, Example, Label, Prediction, utcnow
from loopline.errors import CheckpointError, RecordError
from loopline.heartbeat import Heartbeat
from loopline.holdout import Holdout
from loopline.kafka import consumer_config
from loopline.routing import RoutingStore
from loopline.settings import Settings
from loopline.signing import private_key, sign_verdict
from loopline.spec import HOLDOUT_CAPACITY, TAIL_RECORDS, Spec
from pusher.commands import ControlFollower
from pusher.metrics import PusherMetrics
from pusher.online import OnlineMetrics
from pusher.policy import push
from pusher.qualify import qualify, ready
from pusher.ramp import RampDriver
from pusher.recent import RecentHoldout, select
from pusher.retention import VerdictSweeper

log = logging.getLogger(__name__)

#: How often waiting checkpoints are looked at again.
LOOK_SECONDS = 0.25


class Pusher:
    def __init__(
        self,
        settings: Settings,
        spec: Spec | None = None,
        *,
        holdout_size: int = HOLDOUT_CAPACITY,
        tail_records: int = TAIL_RECORDS,
        tick_seconds: float = 0.2,
        sweep_seconds: float = 600.0,
    ) -> None:
        self.settings = settings
        self.spec = spec or settings.load_spec()
        self.store = CheckpointStore.of(settings)
        self._verdict_key = private_key(settings, "pusher")
        self.routing = RoutingStore(settings)
        self.holdout: deque[Example] = deque(maxlen=holdout_size)
        self.online = OnlineMetrics(self.spec)
        self.driver = RampDriver(self.spec, self.routing, self.online)
        self.control = ControlFollower(settings, self.spec.name, self.routing)
        self.heartbeat = Heartbeat(settings, f"pusher.{self.spec.name}", self.routing.client)
        self.sweeper = VerdictSweeper(self.routing, self.store, self.spec.name, sweep_seconds)
        self._tail_records = tail_records
        self._tick_seconds = tick_seconds
        self._settled = 0
        self._next_look = 0.0
        self._holdout = Holdout.of(settings, self.spec.training.holdout_fraction)
        self._examples = settings.topic("examples")
        self._predictions = settings.topic("predictions")
        self._waiting: dict[str, tuple[CheckpointManifest, Any, Message]] = {}
        self._offsets: dict[int, dict[int, bool]] = {}
        self._models: dict[str, Any] = {}
        self.metrics = PusherMetrics(self.routing)
        self.control.unreadable = self.metrics.unreadable.labels("control")
        self.control.refused = self.metrics.refused_commands
        self.registry = self.metrics.registry
        self.verdicts = self.metrics.verdicts
        self.ramp_actions = self.metrics.ramp_actions

    # -- the loop ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop``; every call starts over from the committed offsets."""
        s = self.settings
        self._offsets.clear()
        self._waiting.clear()
        self.control.catch_up()
        checkpoints = Consumer(consumer_config(s, f"{s.topic_prefix}pusher"))
        tail = Consumer(consumer_config(s, f"{s.topic_prefix}pusher-tail"))
        control = self.control.consumer()
        try:
            checkpoints.subscribe([s.topic("checkpoints")])
            tail.assign(self._tail_partitions(tail))
            self.driver.tick()
            next_tick = time.monotonic()
            while not stop.is_set():
                for msg in tail.consume(2000, 0.05):
                    if msg.error() is None:
                        self._tail(msg)
                for msg in checkpoints.consume(50, 0.05):
                    if msg.error() is None:
                        self._checkpoint(msg)
                for msg in control.consume(10, 0):
                    if msg.error() is None:
                        self.control.handle(msg)
                        control.commit(message=msg, asynchronous=False)
                self._judge_waiting()
                self._commit(checkpoints)
                self.heartbeat.beat(
                    {
                        "model": self.spec.name,
                        "holdout": len(self.holdout),
                        "holdout_settled": self._settled,
                        "waiting": list(self._waiting),
                    }
                )
                if time.monotonic() >= next_tick:
                    if self.driver.tick() is not None:
                        self.ramp_actions.inc()
                    next_tick = time.monotonic() + self._tick_seconds
                self.sweeper.maybe_sweep()
        finally:
            checkpoints.close()
            tail.close()
            self.control.closing = True
            control.close()
            self.routing.close()

    def _tail_partitions(self, consumer: Consumer) -> list[TopicPartition]:
        assigned = []
        for name in ("examples", "predictions", "labels"):
            topic = self.settings.topic(name)
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                assigned.append(TopicPartition(topic, p, max(low, high - self._tail_records)))
        return assigned

    def _tail(self, msg: Message) -> None:
        topic = msg.topic()
        raw = msg.value() or b""
        try:
            if topic == self._examples:
                name = "examples"
                example = Example.from_json(raw)
                if example.event_id in self._holdout:
                    self.holdout.append(example)
            elif topic == self._predictions:
                name = "predictions"
                self.online.prediction(Prediction.from_json(raw))
            else:
                name = "labels"
                self.online.label(Label.from_json(raw))
        except RecordError as exc:  # the tail is re-read on every start: no warning each time
            log.debug("skipping a bad record on %s: %s", topic, exc)
            self.metrics.unreadable.labels(name).inc()

    # -- checkpoints ---------------------------------------------------------------

    def _checkpoint(self, msg: Message) -> None:
        partition, offset = msg.partition() or 0, msg.offset() or 0
        self._offsets.setdefault(partition, {})[offset] = False
        try:
            announced = CheckpointManifest.from_json(msg.value() or b"")
        except RecordError as exc:
            log.error("unreadable checkpoint announcement at %d/%d: %s", partition, offset, exc)
            self.metrics.unreadable.labels("checkpoints").inc()
            self._offsets[partition][offset] = True
            return
        cid = announced.checkpoint_id
        if announced.model_name != self.spec.name:
            log.debug("checkpoint %s is of model %s, not ours", cid, announced.model_name)
            self._offsets[partition][offset] = True
            return
        if self.routing.verdict(cid) is not None:
            self._offsets[partition][offset] = True
            return
        try:
            manifest, model = self.store.load(cid)
        except CheckpointError as exc:
            self._record(announced, False, (f"signature: {exc}",), {}, "refused")
            self._offsets[partition][offset] = True
            return
        held = self._waiting.pop(manifest.lineage, None)
        if held is not None:
            self._record(held[0], False, (f"superseded by {cid}",), {}, "not judged")
            self._done(held[2])
        self._waiting[manifest.lineage] = (manifest, model, msg)
        self._next_look = 0.0
        recent = self.recent()
        first = self.routing.table().champion is None
        if not ready(self.spec, manifest, recent, first=first):
            log.info(
                "checkpoint %s waits for the holdout: %d of %d recent examples settled",
                cid,
                len(recent.settled),
                self.spec.qualification.min_holdout,
            )

    def recent(self) -> RecentHoldout:
        """The recent holdout now, outside the windows marked anomalous."""
        recent = select(self.spec, self.holdout, utcnow(), self.control.state.excluded)
        self._settled = len(recent.settled)
        return recent

    def _judge_waiting(self) -> None:
        # Labels settle with time as well as with new examples: look again now and then.
        if not self._waiting or time.monotonic() < self._next_look:
            return
        self._next_look = time.monotonic() + LOOK_SECONDS
        recent = self.recent()
        for lineage in list(self._waiting):
            manifest, model, msg = self._waiting[lineage]
            champion_id = self.routing.table().champion  # a verdict just now may set one
            if ready(self.spec, manifest, recent, first=champion_id is None):
                del self._waiting[lineage]
                self._judge(manifest, model, recent, champion_id)
                self._done(msg)

    def _judge(
        self,
        manifest: CheckpointManifest,
        model: Any,
        recent: RecentHoldout,
        champion_id: str | None,
    ) -> None:
        champion = self._model(champion_id) if champion_id else None
        verdict = qualify(self.spec, manifest, model, recent, champion, first=champion_id is None)
        action = "refused"
        if verdict.qualified:
            action = push(self.spec, self.routing, manifest, self._manifest)
        self._record(
            manifest, verdict.qualified, verdict.reasons, verdict.figures, action, champion_id
        )
        log.info(
            "checkpoint %s %s: %s",
            manifest.checkpoint_id,
            "qualified" if verdict.qualified else "refused",
            action if verdict.qualified else "; ".join(verdict.reasons),
        )

    def _record(
        self,
        manifest: CheckpointManifest,
        qualified: bool,
        reasons: tuple[str, ...],
        figures: dict[str, float | None],
        action: str,
        champion: str | None = None,
    ) -> None:
        verdict = "qualified" if qualified else "refused"
        self.verdicts.labels(verdict).inc()
        # Signed, so that serving trusts the pusher's word and not whoever wrote Redis.
        document = {
            "checkpoint_id": manifest.checkpoint_id,
            "manifest_sha256": manifest_sha256(manifest),
            "verdict": verdict,
            "reasons": list(reasons),
            "figures": figures,
            "champion": champion,
            "action": action,
            "decided_at": utcnow().isoformat(),
            "manifest": manifest,
        }
        self.routing.record_verdict(
            manifest.checkpoint_id, sign_verdict(document, self._verdict_key)
        )

    def _model(self, checkpoint_id: str) -> Any | None:
        if checkpoint_id not in self._models:
            try:
                self._models = {checkpoint_id: self.store.load(checkpoint_id)[1]}
            except CheckpointError as exc:
                log.error("cannot load the champion to compare with: %s", exc)
                return None
        return self._models[checkpoint_id]

    def _manifest(self, checkpoint_id: str) -> CheckpointManifest | None:
        try:
            return self.store.manifest(checkpoint_id)
        except CheckpointError:
            return None

    # -- offsets -------------------------------------------------------------------

    def _done(self, msg: Message) -> None:
        self._offsets[msg.partition() or 0][msg.offset() or 0] = True

    def _commit(self, consumer: Consumer) -> None:
        """Commit, per partition, past the longest run of finished checkpoints."""
        topic = self.settings.topic("checkpoints")
        commits = []
        for partition, offsets in self._offsets.items():
            last = None
            for offset in sorted(offsets):
                if not offsets[offset]:
                    break
                last = offset
            if last is not None:
                commits.append(TopicPartition(topic, partition, last + 1))
                for offset in [o for o in offsets if o <= last]:
                    del offsets[offset]
        if commits:
            consumer.commit(offsets=commits, asynchronous=False)
