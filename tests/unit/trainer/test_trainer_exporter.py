"""The trainer's metrics: counters present from the start, lag from librdkafka's statistics."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry

from trainer.exporter import Exporter
from trainer.learner import Counts


def _partition(end: int, position: int, *, desired: bool = True) -> dict[str, object]:
    return {
        "desired": desired,
        "ls_offset": end,
        "hi_offset": end,
        "app_offset": position,
        "committed_offset": -1001,
        "lo_offset": 0,
    }


def test_every_outcome_is_exported_before_the_first_example() -> None:
    exporter = Exporter("shop", CollectorRegistry())
    value = exporter.registry.get_sample_value
    for outcome in Counts().as_dict():
        assert value("loopline_trainer_examples_total", {"model": "shop", "outcome": outcome}) == 0


def test_lag_comes_from_the_assigned_partitions_in_the_statistics() -> None:
    exporter = Exporter("shop", CollectorRegistry())
    partitions = {
        "0": _partition(120, 100),
        "1": _partition(50, 50),
        "2": _partition(999, 0, desired=False),  # another trainer's partition
        "-1": _partition(-1001, -1001, desired=False),
    }
    stats = {"topics": {"loopline.examples": {"partitions": partitions}}}
    exporter.kafka_stats(orjson.dumps(stats).decode())
    lag = {"model": "shop"}
    assert exporter.registry.get_sample_value("loopline_trainer_consumer_lag", lag) == 20
    exporter.kafka_stats(orjson.dumps({"topics": {}}).decode())  # nothing known: unchanged
    assert exporter.registry.get_sample_value("loopline_trainer_consumer_lag", lag) == 20
