from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from loopline.devstack import free_port
from loopline.kafka import (
    MAX_MESSAGE_BYTES,
    TOPIC_MAX_MESSAGE_BYTES,
    changelog_topic_config,
    config_drift,
    producer_config,
    segment_ms,
    topic_config,
)
from loopline.settings import TOPICS, Settings

DAY_MS = 86_400_000


def test_every_topic_is_deleted_by_age_except_control_kept_forever() -> None:
    settings = Settings.from_env({})
    for name in TOPICS:
        config = topic_config(settings, name)
        assert config["cleanup.policy"] == "delete"
        assert config["max.message.bytes"] == str(TOPIC_MAX_MESSAGE_BYTES)
        assert int(config["segment.ms"]) > 0
        if name == "control":
            assert config["retention.ms"] == config["retention.bytes"] == "-1"
        else:
            assert 0 < int(config["retention.ms"]) < 365 * DAY_MS


def test_retention_comes_from_settings() -> None:
    settings = Settings.from_env(
        {"LOOPLINE_EXAMPLES_RETENTION_DAYS": "0.5", "LOOPLINE_EVENTS_RETENTION_DAYS": "3"}
    )
    assert topic_config(settings, "examples")["retention.ms"] == str(DAY_MS // 2)
    assert topic_config(settings, "events")["retention.ms"] == str(3 * DAY_MS)
    assert topic_config(settings, "labels")["retention.ms"] == str(7 * DAY_MS)


def test_segments_bound_how_long_a_deleted_record_outlives_its_retention() -> None:
    for days in (0.01, 0.5, 3, 7, 30, 365):
        retention = int(days * DAY_MS)
        segment = segment_ms(retention)
        assert 3_600_000 <= segment <= DAY_MS
        assert segment <= max(3_600_000, retention // 7)


def test_producers_stay_under_what_every_topic_takes() -> None:
    assert producer_config(Settings.from_env({}))["message.max.bytes"] == MAX_MESSAGE_BYTES
    # Room for a full batch's framing under the topic's limit.
    assert TOPIC_MAX_MESSAGE_BYTES - MAX_MESSAGE_BYTES >= 16 * 1024


def test_an_oversized_record_fails_in_the_producer() -> None:
    settings = Settings.from_env({}, kafka_bootstrap=f"127.0.0.1:{free_port()}")  # nothing listens
    producer = Producer(producer_config(settings, **{"message.timeout.ms": 1000}))
    with pytest.raises(KafkaException) as raised:
        producer.produce("unit.events", b"x" * (MAX_MESSAGE_BYTES + 1), b"k")
    assert raised.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    producer.produce("unit.events", b"x" * (MAX_MESSAGE_BYTES - 1024), b"k")  # accepted
    producer.purge()
    producer.flush(0)


def test_changelog_is_compacted() -> None:
    config = changelog_topic_config()
    assert config["cleanup.policy"] == "compact"
    assert "retention.ms" not in config


def test_drift_names_keys_missing_or_different() -> None:
    wanted = {"retention.ms": "-1", "cleanup.policy": "delete", "segment.ms": "1"}
    found = {"retention.ms": "604800000", "cleanup.policy": "delete"}
    assert config_drift(wanted, found) == {"retention.ms": "604800000", "segment.ms": None}
    assert config_drift(wanted, wanted) == {}
