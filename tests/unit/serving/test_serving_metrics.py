from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import RETIRE_AFTER_SECONDS, ServingMetrics


def _answers(metrics: ServingMetrics) -> dict[tuple[str, str], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.labels["model_version"], s.labels["fallback"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "loopline_serving_predictions_total"
    }


def test_answers_are_counted_by_version_and_fallback() -> None:
    metrics = ServingMetrics(always=("fallback",))
    for _ in range(3):
        metrics.predictions.inc("ck-1", False)
    metrics.predictions.inc("ck-1", True)
    metrics.predictions.inc("fallback", True)
    assert _answers(metrics) == {
        ("ck-1", "false"): 3.0,
        ("ck-1", "true"): 1.0,
        ("fallback", "true"): 1.0,
    }
    text = generate_latest(metrics.registry).decode()
    assert 'loopline_serving_predictions_created{fallback="false",model_version="ck-1"}' in text


def test_a_version_out_of_the_table_is_dropped_after_the_grace_period() -> None:
    metrics = ServingMetrics(always=("fallback",))
    answers = metrics.predictions
    for version in ("ck-1", "ck-2", "fallback"):
        answers.inc(version, version == "fallback")
    answers.retire({"ck-2"}, now=0.0)  # ck-1 left the table
    answers.retire({"ck-2"}, now=RETIRE_AFTER_SECONDS - 1)
    assert answers.versions() == {"ck-1", "ck-2", "fallback"}  # its last answers still scraped
    answers.retire({"ck-2"}, now=RETIRE_AFTER_SECONDS)
    assert answers.versions() == {"ck-2", "fallback"}
    assert set(_answers(metrics)) == {("ck-2", "false"), ("fallback", "true")}
    answers.retire(set(), now=10 * RETIRE_AFTER_SECONDS)  # nothing serves: fallback stays
    answers.retire(set(), now=20 * RETIRE_AFTER_SECONDS)
    assert answers.versions() == {"fallback"}


def test_a_version_back_in_the_table_before_the_grace_ends_keeps_its_count() -> None:
    answers = ServingMetrics().predictions
    answers.inc("ck-1", False)
    answers.retire(set(), now=0.0)
    answers.retire({"ck-1"}, now=RETIRE_AFTER_SECONDS / 2)  # rolled back to it
    answers.retire(set(), now=RETIRE_AFTER_SECONDS)  # left again: the clock restarts
    answers.inc("ck-1", False)
    assert answers.versions() == {"ck-1"}
    answers.retire(set(), now=2 * RETIRE_AFTER_SECONDS)
    assert answers.versions() == set()


def test_the_scrape_retires_with_the_table_in_force() -> None:
    metrics = ServingMetrics()
    metrics.predictions.inc("ck-1", False)
    metrics.serving({"ck-2": 100.0}, {})
    assert metrics.predictions.versions() == {"ck-1"}  # left, within the grace period


def test_gauges_are_set_before_every_scrape_filtered_or_not() -> None:
    metrics = ServingMetrics()
    scrapes: list[int] = []

    def observe() -> None:
        scrapes.append(1)
        metrics.routing_version.set(len(scrapes))

    metrics.registry.before_scrape = observe
    assert "loopline_serving_routing_version 1.0" in generate_latest(metrics.registry).decode()
    value = metrics.registry.get_sample_value("loopline_serving_routing_version")
    assert value == 2.0
    only = metrics.registry.restricted_registry(["loopline_serving_routing_version"])
    assert "loopline_serving_routing_version 3.0" in generate_latest(only).decode()
