"""The streams' counts as Prometheus series: skew by feature apart from the outcomes."""

from __future__ import annotations

from prometheus_client import REGISTRY

from streams import metrics


def test_skew_counts_are_a_series_by_feature_and_parity_counts_are_outcomes() -> None:
    metrics.record_counts(
        {7: {"examples_served": 5, "examples_recomputed": 2, "skew.impressions_1h": 3}}
    )
    value = REGISTRY.get_sample_value
    skew = {"partition": "7", "feature": "impressions_1h"}
    assert value("loopline_streams_served_skew", skew) == 3
    served = {"partition": "7", "outcome": "examples_served"}
    assert value("loopline_streams_records", served) == 5
    leaked = {"partition": "7", "outcome": "skew.impressions_1h"}
    assert value("loopline_streams_records", leaked) is None
