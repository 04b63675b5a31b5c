"""Prometheus metrics of a streams worker (served on ``LOOPLINE_METRICS_PORT``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge

from streams.skew import SKEW as SKEW_PREFIX

RECORDS = Gauge(
    "loopline_streams_records",
    "Records per accounting outcome (absolute, as of the partition's last commit).",
    ["partition", "outcome"],
)
FEATURE_ROWS = Counter(
    "loopline_streams_feature_rows_written", "Entity rows written to the online store."
)
AUTO_PAUSES = Counter(
    "loopline_streams_auto_pauses", "Auto-pause commands sent by the data-health monitor."
)
BATCH_FAILURES = Counter(
    "loopline_streams_batch_failures",
    "Batches undone and read again because something raised before their commit.",
)
SKEW = Gauge(
    "loopline_streams_served_skew",
    "Served events whose logged entity feature differs from the streams' value, by feature "
    "(absolute, as of the partition's last commit).",
    ["partition", "feature"],
)
HEALTH = Gauge("loopline_streams_health_window", "Last closed health window.", ["measure"])
BREACHES = Gauge("loopline_streams_health_breaches", "Breaches in the last closed health window.")


def record_counts(counts: Mapping[int, Mapping[str, int]]) -> None:
    """Publish each partition's counts; ``skew.<feature>`` ones as ``SKEW`` by feature.

    Parity shows as ``RECORDS`` outcomes: ``examples_served`` (entity features as
    serving read them) beside ``examples_recomputed``, and ``served_skewed`` of
    ``served_compared`` served events.
    """
    for partition, values in counts.items():
        for outcome, value in values.items():
            if outcome.startswith(SKEW_PREFIX):
                SKEW.labels(str(partition), outcome.removeprefix(SKEW_PREFIX)).set(value)
            else:
                RECORDS.labels(str(partition), outcome).set(value)


def record_health(last: Mapping[str, Any]) -> None:
    window = last.get("window")
    if not window:
        return
    HEALTH.labels("events").set(window["events"])
    HEALTH.labels("rejected").set(sum(window["rejected"].values()))
    if window["label_rate"] is not None:
        HEALTH.labels("label_rate").set(window["label_rate"])
    for name, rate in window["missing_rate"].items():
        HEALTH.labels(f"missing_rate:{name}").set(rate)
    BREACHES.set(len(last.get("breaches", ())))
