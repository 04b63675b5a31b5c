"""What the demo watches while the loop runs, and records into its :class:`Timeline`.

Read from where each part of the loop leaves its record, as an operator's tools would:
checkpoint manifests and control commands from their topics (followed from the start,
outside any consumer group), verdicts, the routing table, the ramp and the routing log
from Redis, the books from the streams' accounting, feature rows from the streams'
Prometheus endpoint. :meth:`Watch.poll` returns what is new since the last call.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from loopline.checkpoints import CheckpointStore
from loopline.contracts import CheckpointManifest, Command, CommandKind, parse_ts, utcnow
from loopline.errors import CheckpointError, RecordError
from loopline.kafka import consumer_config
from loopline.routing import RampState, RoutingStore, RoutingTable
from loopline.settings import Settings
from ops.demo_timeline import CheckpointPoint, ShareSample, Span, Timeline, paused_spans

FALLBACK = "fallback"


class TopicFollower:
    """Every record of a topic from its start, a batch at a time, without a group."""

    def __init__(self, settings: Settings, name: str) -> None:
        topic = settings.topic(name)
        group = f"{settings.topic_prefix}demo-watch"
        self.consumer = Consumer(consumer_config(settings, group))
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def poll(self) -> list[bytes]:
        values: list[bytes] = []
        while batch := self.consumer.consume(1000, 0.05):
            values.extend(m.value() or b"" for m in batch if m.error() is None)
        return values

    def close(self) -> None:
        self.consumer.close()


@dataclass
class News:
    """What changed since the last poll."""

    manifests: list[CheckpointManifest] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    routing: list[dict[str, Any]] = field(default_factory=list)
    ramp_moved: bool = False


def _moment(ramp: RampState) -> tuple[datetime, int, str]:
    """What makes a ramp's move worth telling (not a fresher candidate swapped in)."""
    return ramp.started_at, ramp.stage, ramp.status.value


class Watch:
    """The demo's view of the loop; also keeps its history for the summary."""

    def __init__(self, settings: Settings, timeline: Timeline) -> None:
        self.settings = settings
        self.timeline = timeline
        self.routing = RoutingStore(settings)
        self.store = CheckpointStore.of(settings)
        self.metric = timeline.metric
        self.manifests: dict[str, CheckpointManifest] = {}
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.commands: list[Command] = []
        self.champions: list[tuple[datetime, str]] = []  # (since, checkpoint id)
        self.stages: dict[str, list[float]] = {}  # candidate version -> percents reached
        self.table = RoutingTable()
        self.ramp: RampState | None = None
        self.streams_metrics: str | None = None
        self._checkpoints = TopicFollower(settings, "checkpoints")
        self._control = TopicFollower(settings, "control")
        self._announced: set[str] = set()
        self._log_seen: set[bytes] = set()
        self._http = httpx.Client(timeout=1.0)

    def close(self) -> None:
        self._checkpoints.close()
        self._control.close()
        self.routing.close()
        self._http.close()

    # -- names ---------------------------------------------------------------------

    def manifest(self, checkpoint_id: str) -> CheckpointManifest | None:
        if checkpoint_id not in self.manifests:
            with contextlib.suppress(CheckpointError):
                self.manifests[checkpoint_id] = self.store.manifest(checkpoint_id)
        return self.manifests.get(checkpoint_id)

    def version(self, checkpoint_id: str | None) -> str:
        """``v<spec version>`` of a checkpoint, ``fallback`` for none."""
        if checkpoint_id is None:
            return FALLBACK
        manifest = self.manifest(checkpoint_id)
        return "v?" if manifest is None else f"v{manifest.spec_version}"

    def name(self, checkpoint_id: str | None) -> str:
        """A checkpoint as the narration shows it: version and id suffix (``v1·4cfd37``);
        what is not a checkpoint (``fallback``, ``no answer``) as it is."""
        if checkpoint_id is None:
            return FALLBACK
        if self.manifest(checkpoint_id) is None:
            return checkpoint_id
        return f"{self.version(checkpoint_id)}·{checkpoint_id.rsplit('-', 1)[-1]}"

    # -- polling -------------------------------------------------------------------

    def poll(self) -> News:
        news = News()
        now = utcnow()
        for raw in self._checkpoints.poll():
            with contextlib.suppress(RecordError):
                manifest = CheckpointManifest.from_json(raw)
                # A restarting trainer announces its restored checkpoint again.
                if manifest.checkpoint_id not in self._announced:
                    self._announced.add(manifest.checkpoint_id)
                    self._checkpoint(manifest, news)
        for raw in self._control.poll():
            with contextlib.suppress(RecordError):
                command = Command.from_json(raw)
                self.commands.append(command)
                news.commands.append(command)
        news.verdicts = self._new_verdicts()
        news.routing = self._new_log()
        table, ramp = self.routing.table(), self.routing.ramp()
        last = self.champions[-1][1] if self.champions else None
        if table.champion is not None and table.champion != last:
            self.champions.append((table.updated_at or now, table.champion))
        news.ramp_moved = ramp is not None and _moment(ramp) != (
            None if self.ramp is None else _moment(self.ramp)
        )
        if ramp is not None and ramp.active:
            reached = self.stages.setdefault(self.version(ramp.candidate), [])
            if ramp.percent not in reached:
                reached.append(ramp.percent)
        self.table, self.ramp = table, ramp
        self.timeline.shares.append(ShareSample(now, self.shares(table)))
        self._spans(now)
        return news

    def shares(self, table: RoutingTable) -> dict[str, float]:
        shares: dict[str, float] = {}
        for route in table.routes:
            version = self.version(route.checkpoint_id)
            shares[version] = shares.get(version, 0.0) + route.percent
        return shares or {FALLBACK: 100.0}

    def _checkpoint(self, manifest: CheckpointManifest, news: News) -> None:
        self.manifests[manifest.checkpoint_id] = manifest
        news.manifests.append(manifest)
        metrics = manifest.metrics
        self.timeline.checkpoints.append(
            CheckpointPoint(
                manifest.created_at,
                manifest.spec_version,
                manifest.checkpoint_id,
                manifest.examples_seen,
                metrics.get(self.metric),
                metrics.get(f"holdout_{self.metric}"),
            )
        )

    def _new_verdicts(self) -> list[dict[str, Any]]:
        ids = [m for m in self.manifests if m not in self.verdicts]
        fresh = []
        for checkpoint_id in ids:
            verdict = self.routing.verdict(checkpoint_id)
            if verdict is not None:
                self.verdicts[checkpoint_id] = verdict
                fresh.append(verdict)
        return sorted(fresh, key=lambda v: str(v.get("decided_at")))

    def _new_log(self) -> list[dict[str, Any]]:
        fresh = []
        for raw in self.routing.client.lrange(self.routing.log_key, 0, 49):
            if raw in self._log_seen:
                break
            self._log_seen.add(raw)
            fresh.append(orjson.loads(raw))
        return fresh[::-1]

    def _spans(self, now: datetime) -> None:
        changes = []
        anomalous = []
        for c in self.commands:
            if c.kind in (CommandKind.PAUSE, CommandKind.RESUME):
                changes.append((c.issued_at, c.kind.value))
            elif c.kind is CommandKind.MARK_ANOMALOUS:
                with contextlib.suppress(RecordError):
                    start, end = parse_ts(c.args.get("start")), parse_ts(c.args.get("end"))
                    anomalous.append(Span(start, end, c.reason))
        self.timeline.paused = paused_spans(changes, now)
        self.timeline.anomalous = anomalous

    # -- figures -------------------------------------------------------------------

    def feature_rows(self) -> int | None:
        """Entity rows the streams wrote to the online store, from their metrics."""
        if self.streams_metrics is None:
            return None
        try:
            text = self._http.get(self.streams_metrics).text
        except httpx.HTTPError:
            return None
        for family in text_string_to_metric_families(text):
            if family.name == "loopline_streams_feature_rows_written":
                return int(sum(s.value for s in family.samples if s.name.endswith("_total")))
        return None
