"""Serving's Prometheus metrics, in a registry of their own (one per app)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric


class ServingNow:
    """Each version serving now: its share and when its checkpoint was created.

    Built per scrape from what :meth:`ServingMetrics.serving` last set, so a version
    that left the table leaves the metrics too (removing a labelled gauge's children
    warns once Feast has switched prometheus_client to multiprocess mode).
    """

    def __init__(self) -> None:
        self.shares: dict[str, float] = {}
        self.created: dict[str, float] = {}

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        share = GaugeMetricFamily(
            "loopline_serving_route_percent",
            "Share of entities each model version serves in the table in force.",
            labels=["model_version"],
        )
        for version, percent in self.shares.items():
            share.add_metric([version], percent)
        created = GaugeMetricFamily(
            "loopline_serving_model_created_timestamp_seconds",
            "When the checkpoint of each model version serving now was created.",
            labels=["model_version"],
        )
        for version, at in self.created.items():
            created.add_metric([version], at)
        return iter([share, created])


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "loopline_serving_requests", "Requests to /predict by outcome.", ["outcome"], registry=r
        )
        self.predictions = Counter(
            "loopline_serving_predictions",
            "Answers by model version (fallback answers included).",
            ["model_version", "fallback"],
            registry=r,
        )
        self.fallbacks = Counter(
            "loopline_serving_fallbacks", "Fallback answers by reason.", ["reason"], registry=r
        )
        self.latency = Histogram(
            "loopline_serving_request_seconds",
            "Time to answer /predict, inside the server.",
            buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.routing_version = Gauge(
            "loopline_serving_routing_version", "Version of the routing table in force.", registry=r
        )
        self.now = ServingNow()
        r.register(self.now)
        self.refused = Gauge(
            "loopline_serving_checkpoints_refused",
            "Checkpoints in the routing table that failed verification.",
            registry=r,
        )
        self.dropped = Gauge(
            "loopline_serving_predictions_dropped",
            "Predictions not logged because the producer buffer was full.",
            registry=r,
        )
        self.ready = Gauge(
            "loopline_serving_ready",
            "1 while this instance serves what the routing table says (/healthz is 200).",
            registry=r,
        )
        self.delivery_failures = Counter(
            "loopline_serving_delivery_failures",
            "Records serving produced that the broker never acknowledged, by topic.",
            ["topic"],
            registry=r,
        )

    def serving(self, shares: Mapping[str, float], created: Mapping[str, float]) -> None:
        """What serves now, for the next scrape."""
        self.now.shares, self.now.created = dict(shares), dict(created)
