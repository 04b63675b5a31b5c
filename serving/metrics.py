"""Serving's Prometheus metrics, in a registry of their own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
