"""The pusher's Prometheus metrics, in a registry of its own.

Verdicts and ramp actions are counted as they happen. The routing table and the ramp
are read from Redis at scrape time (:class:`RoutingCollector`): Redis holds the truth,
so a ramp whose driver stopped ticking shows its stage dwell still growing, and a
"ramp stuck" alert can see it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from loopline.contracts import utcnow
from loopline.errors import LooplineError
from loopline.routing import RampState, RampStatus, RoutingStore, RoutingTable

log = logging.getLogger(__name__)

UNREADABLE_TOPICS = ("control", "checkpoints", "examples", "predictions", "labels")


class RoutingCollector:
    """Routing version and the ramp's stage, status and timings, read once per scrape."""

    def __init__(self, routing: RoutingStore) -> None:
        self._routing = routing

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        try:
            table, ramp = self._routing.table(), self._routing.ramp()
        except (redis.RedisError, OSError, LooplineError) as exc:
            log.debug("routing state unreadable for metrics: %s", exc)
            return iter(self._families())
        return iter(self._families(table, ramp))

    def _families(
        self, table: RoutingTable | None = None, ramp: RampState | None = None
    ) -> list[Metric]:
        version = GaugeMetricFamily(
            "loopline_pusher_routing_version", "Version of the routing table in Redis."
        )
        by = ["candidate"]
        stage = GaugeMetricFamily(
            "loopline_pusher_ramp_stage", "Current stage of the ramp, from 1.", labels=by
        )
        stages = GaugeMetricFamily(
            "loopline_pusher_ramp_stages", "Stages of the ramp in all.", labels=by
        )
        percent = GaugeMetricFamily(
            "loopline_pusher_ramp_percent",
            "Share of entities the ramp's stage puts on the candidate.",
            labels=by,
        )
        status = GaugeMetricFamily(
            "loopline_pusher_ramp_status",
            "1 for the ramp's current status, 0 for the others.",
            labels=["candidate", "status"],
        )
        dwell = GaugeMetricFamily(
            "loopline_pusher_ramp_stage_dwell_seconds",
            "Seconds the ramp has spent ramping in its current stage.",
            labels=by,
        )
        target = GaugeMetricFamily(
            "loopline_pusher_ramp_dwell_target_seconds",
            "Seconds each stage dwells before the ramp moves on.",
            labels=by,
        )
        changed = GaugeMetricFamily(
            "loopline_pusher_ramp_last_change_timestamp_seconds",
            "When the ramp last moved (stage, pause, resume, promotion, rollback).",
            labels=by,
        )
        if table is not None:
            version.add_metric([], table.version)
        if ramp is not None:
            who = [ramp.candidate]
            stage.add_metric(who, ramp.stage + 1)
            stages.add_metric(who, len(ramp.stages))
            percent.add_metric(who, ramp.percent)
            for value in RampStatus:
                status.add_metric([ramp.candidate, value.value], float(ramp.status is value))
            dwell.add_metric(who, ramp.dwell(utcnow()))
            target.add_metric(who, ramp.dwell_seconds)
            changed.add_metric(who, ramp.updated_at.timestamp())
        return [version, stage, stages, percent, status, dwell, target, changed]


class PusherMetrics:
    def __init__(self, routing: RoutingStore, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.verdicts = Counter(
            "loopline_pusher_verdicts",
            "Checkpoints judged, by verdict.",
            ["verdict"],
            registry=self.registry,
        )
        for verdict in ("qualified", "refused"):
            self.verdicts.labels(verdict)
        self.ramp_actions = Counter(
            "loopline_pusher_ramp_actions",
            "Ramp advances, promotions and rollbacks.",
            registry=self.registry,
        )
        self.unreadable = Counter(
            "loopline_pusher_unreadable_records",
            "Records the pusher read but could not decode, skipped, by topic.",
            ["topic"],
            registry=self.registry,
        )
        for topic in UNREADABLE_TOPICS:
            self.unreadable.labels(topic)
        self.refused_commands = Counter(
            "loopline_pusher_control_refused",
            "Commands on control not applied: unsigned, or not signed by the operator key "
            "their issued_by names.",
            registry=self.registry,
        )
        self.registry.register(RoutingCollector(routing))
