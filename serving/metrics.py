"""Serving's Prometheus metrics, in a registry of their own (one per app).

Gauges that describe the instance (routing version, readiness, what serves) are set
just before each scrape (:class:`ScrapedRegistry`), on the metrics port
(``LOOPLINE_METRICS_PORT``) as on the HTTP port's ``/metrics``.

Series labelled by model version follow the routing table: a version that stopped
serving leaves the metrics (at once for gauges, :data:`RETIRE_AFTER_SECONDS` later for
the answers counted), so a long-running instance does not keep a series for every
checkpoint it ever served.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import RestrictedRegistry

#: How long the answers of a version that left the routing table are still exported:
#: several scrape intervals, so the last ones counted are scraped before the series goes.
RETIRE_AFTER_SECONDS = 900.0


def _nothing() -> None:
    return None


class ScrapedRegistry(CollectorRegistry):
    """A registry that calls :attr:`before_scrape` before each collection.

    prometheus_client's HTTP server and :func:`~prometheus_client.generate_latest`
    both go through :meth:`collect` (or :meth:`restricted_registry` for a
    ``name[]`` filter), so every scrape sees gauges as of that scrape.
    """

    def __init__(self) -> None:
        super().__init__()
        self.before_scrape: Callable[[], None] = _nothing

    def collect(self) -> Iterable[Metric]:
        self.before_scrape()
        yield from super().collect()

    def restricted_registry(self, names: Iterable[str]) -> RestrictedRegistry:
        self.before_scrape()
        return super().restricted_registry(names)


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


class Answers:
    """``loopline_serving_predictions``: answers by model version and fallback, a counter.

    A version that is not serving (nor one of ``always``) is dropped once
    :meth:`retire` has seen it out of the table for ``retire_after`` seconds; if it
    serves again its count starts over, which Prometheus reads as a counter reset. A
    collector of its own rather than a labelled Counter, for the reason
    :class:`ServingNow` gives.
    """

    def __init__(
        self, always: Collection[str] = (), retire_after: float = RETIRE_AFTER_SECONDS
    ) -> None:
        self._always = frozenset(always)
        self.retire_after = retire_after
        self._lock = threading.Lock()
        #: (version, fallback) -> [count, created (epoch seconds)]
        self._counts: dict[tuple[str, str], list[float]] = {}
        self._left: dict[str, float] = {}

    def inc(self, version: str, fallback: bool) -> None:
        key = (version, "true" if fallback else "false")
        with self._lock:
            entry = self._counts.get(key)
            if entry is None:
                self._counts[key] = [1.0, time.time()]
            else:
                entry[0] += 1

    def retire(self, serving: Collection[str], now: float | None = None) -> None:
        """Note which versions serve now; drop those out of the table long enough."""
        now = time.monotonic() if now is None else now
        with self._lock:
            versions = {v for v, _ in self._counts}
            for version in versions:
                if version in serving or version in self._always:
                    self._left.pop(version, None)
                    continue
                left = self._left.setdefault(version, now)
                if now - left >= self.retire_after:
                    del self._left[version]
                    for key in [k for k in self._counts if k[0] == version]:
                        del self._counts[key]

    def versions(self) -> set[str]:
        with self._lock:
            return {v for v, _ in self._counts}

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "loopline_serving_predictions",
            "Answers by model version (fallback answers included).",
            labels=["model_version", "fallback"],
        )
        with self._lock:
            for (version, fallback), (count, created) in self._counts.items():
                family.add_metric([version, fallback], count, created=created)
        return iter([family])


class ServingMetrics:
    def __init__(self, always: Collection[str] = ()) -> None:
        """``always``: versions whose answers are never retired (the fallback's)."""
        self.registry = ScrapedRegistry()
        r = self.registry
        self.requests = Counter(
            "loopline_serving_requests", "Requests to /predict by outcome.", ["outcome"], registry=r
        )
        self.predictions = Answers(always)
        r.register(self.predictions)
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
        self.events_dropped = Gauge(
            "loopline_serving_events_dropped",
            "Served events not published because the producer buffer was full.",
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
        """What serves now, for the next scrape; versions no longer in it are retired."""
        self.now.shares, self.now.created = dict(shares), dict(created)
        self.predictions.retire(shares)
