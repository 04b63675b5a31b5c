"""Prometheus metrics of one trainer, in its own registry (tests run several at once).

Counters move once per batch, gauges once per checkpoint: never per example. The
consumer lag comes from librdkafka's statistics (``stats_cb``), every
:data:`~loopline.kafka.STATS_INTERVAL_MS`.
"""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from loopline.contracts import CheckpointManifest
from loopline.kafka import consumer_lag
from trainer.learner import Counts
from trainer.metrics import ProgressiveMetrics


class Exporter:
    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.model = model_name
        self.examples = Counter(
            "loopline_trainer_examples",
            "Examples consumed, by outcome (learned, holdout, excluded, invalid, duplicates).",
            ["model", "outcome"],
            registry=self.registry,
        )
        for outcome in Counts().as_dict():  # a trainer that never learns still shows 0
            self.examples.labels(model_name, outcome)
        self.metric = Gauge(
            "loopline_trainer_progressive_metric",
            "Progressive (test-then-train) metric; scope is overall, window or holdout.",
            ["model", "metric", "scope"],
            registry=self.registry,
        )
        self.checkpoints = Counter(
            "loopline_trainer_checkpoints",
            "Checkpoints written.",
            ["model"],
            registry=self.registry,
        )
        self.last_checkpoint = Gauge(
            "loopline_trainer_last_checkpoint_timestamp_seconds",
            "When the newest checkpoint was written.",
            ["model"],
            registry=self.registry,
        )
        self.examples_in_checkpoint = Gauge(
            "loopline_trainer_checkpoint_examples_seen",
            "Examples learned by the newest checkpoint's model.",
            ["model"],
            registry=self.registry,
        )
        self.paused = Gauge(
            "loopline_trainer_paused",
            "1 while training is paused.",
            ["model"],
            registry=self.registry,
        )
        self.windows = Gauge(
            "loopline_trainer_excluded_windows",
            "Anomalous event-time windows currently excluded.",
            ["model"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "loopline_trainer_consumer_lag",
            "Examples on the topic past this trainer's position, summed over its partitions.",
            ["model"],
            registry=self.registry,
        )
        self._exported = Counts()

    def count_from(self, counts: Counts) -> None:
        """Count only what is learned from here on: a restored checkpoint's examples were
        counted by the process that learned them."""
        self._exported = Counts(**counts.as_dict())

    def counts(self, counts: Counts) -> None:
        for outcome, value in counts.as_dict().items():
            delta = value - getattr(self._exported, outcome)
            if delta > 0:
                self.examples.labels(self.model, outcome).inc(delta)
        self._exported = Counts(**counts.as_dict())

    def checkpoint(self, manifest: CheckpointManifest, metrics: ProgressiveMetrics) -> None:
        self.checkpoints.labels(self.model).inc()
        self.last_checkpoint.labels(self.model).set(manifest.created_at.timestamp())
        self.examples_in_checkpoint.labels(self.model).set(manifest.examples_seen)
        scopes = {"overall": metrics.overall.values(), "holdout": metrics.holdout.values()}
        latest = metrics.latest_window()
        if latest is not None:
            scopes["window"] = latest[1]
        for scope, values in scopes.items():
            for name, value in values.items():
                if value is not None:
                    self.metric.labels(self.model, name, scope).set(value)

    def kafka_stats(self, raw: str) -> None:
        """The consumer's ``stats_cb``: librdkafka calls it from ``consume``, on our thread."""
        lag = consumer_lag(orjson.loads(raw))
        if lag is not None:
            self.lag.labels(self.model).set(lag)

    def state(self, paused: bool, windows: int) -> None:
        self.paused.labels(self.model).set(1 if paused else 0)
        self.windows.labels(self.model).set(windows)
