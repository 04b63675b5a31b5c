"""Topic configuration as the broker describes it (DescribeConfigs)."""

from __future__ import annotations

import logging
import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from loopline.kafka import admin, create_topics, topic_config, topic_configs
from loopline.settings import TOPICS, Settings


def _described(settings: Settings, names: tuple[str, ...] = TOPICS) -> dict[str, dict[str, str]]:
    try:
        return topic_configs(admin(settings), [settings.topic(n) for n in names])
    except KafkaException as exc:
        pytest.skip(f"the broker does not describe topic configs (DescribeConfigs): {exc}")


def test_created_topics_carry_loopline_configs(settings: Settings) -> None:
    described = _described(settings)
    for name in TOPICS:
        found = described[settings.topic(name)]
        for key, value in topic_config(settings, name).items():
            assert found.get(key) == value, (name, key)
    assert described[settings.topic("control")]["retention.ms"] == "-1"
    assert described[settings.topic("events")]["cleanup.policy"] == "delete"


def test_retention_set_in_settings_reaches_the_topic(settings: Settings) -> None:
    short = settings.replace(
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.", examples_retention_days=0.25
    )
    assert set(create_topics(short, names=("examples",)).values()) == {"created"}
    found = _described(short, ("examples",))[short.topic("examples")]
    assert found["retention.ms"] == str(6 * 3_600_000)
    assert found["segment.ms"] == str(3_600_000)


def test_an_existing_topic_is_left_alone_and_its_drift_named(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    other = settings.replace(topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    topic = other.topic("control")
    client = admin(other)
    futures = client.create_topics(
        [NewTopic(topic, 1, 1, config={"retention.ms": "604800000"})], operation_timeout=15
    )
    futures[topic].result(15)
    with caplog.at_level(logging.WARNING, logger="loopline.kafka"):
        assert create_topics(other, names=("control",)) == {topic: "exists"}
    assert _described(other, ("control",))[topic]["retention.ms"] == "604800000"
    warned = [r.getMessage() for r in caplog.records if topic in r.getMessage()]
    assert any("retention.ms=604800000" in m and "retention.ms=-1" in m for m in warned)


def test_topics_created_by_loopline_show_no_drift(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="loopline.kafka"):
        assert set(create_topics(settings).values()) == {"exists"}
    assert [r.getMessage() for r in caplog.records] == []
