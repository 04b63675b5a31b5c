from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from loopline.contracts import Event, Label
from loopline.errors import BrokerUnavailable, Reason, RecordError
from loopline.publisher import Publisher
from loopline.settings import Settings
from tests.kafka_support import read_topic

FEATURES = {"price": 12.0, "category": "wool", "hour": 9, "device": "mobile"}


def test_ten_thousand_events_arrive_once_each_in_order_per_key(settings: Settings) -> None:
    sent: dict[str, list[str]] = collections.defaultdict(list)
    with Publisher(settings, source="test") as pub:
        for i in range(10_000):
            entity = f"user-{i % 97}"
            sent[entity].append(pub.event(entity, {**FEATURES, "recent_views": i}))
    assert pub.stats.delivered == 10_000
    assert pub.stats.failed == 0

    messages = read_topic(settings, "events", 10_000)
    received: dict[str, list[str]] = collections.defaultdict(list)
    partitions: dict[str, set[int]] = collections.defaultdict(set)
    for msg in messages:
        event = Event.from_json(msg.value())
        assert msg.key() == event.entity_id.encode()
        received[event.entity_id].append(event.event_id)
        partitions[event.entity_id].add(msg.partition())
    assert sum(len(v) for v in received.values()) == 10_000
    assert received == sent  # nothing lost, nothing duplicated, order kept per key
    assert all(len(p) == 1 for p in partitions.values())


def test_label_lands_on_its_events_partition(settings: Settings) -> None:
    with Publisher(settings) as pub:
        ids = [pub.event(f"u{i}", FEATURES) for i in range(20)]
        for i, event_id in enumerate(ids):
            pub.label(event_id, f"u{i}", i % 2 == 0)
    events = {
        Event.from_json(m.value()).event_id: m.partition()
        for m in read_topic(settings, "events", 20)
    }
    labels = read_topic(settings, "labels", 20)
    assert len(labels) == 20
    for msg in labels:
        label = Label.from_json(msg.value())
        assert events[label.event_id] == msg.partition()


def test_invalid_events_raise_at_the_call_site_and_send_nothing(settings: Settings) -> None:
    cases = [
        ({**FEATURES, "colour": "red"}, Reason.UNKNOWN_FEATURE),
        ({**FEATURES, "price": "cheap"}, Reason.WRONG_TYPE),
        ({**FEATURES, "hour": 31}, Reason.OUT_OF_RANGE),
        ({k: v for k, v in FEATURES.items() if k != "device"}, Reason.MISSING_FIELD),
    ]
    with Publisher(settings) as pub:
        for features, reason in cases:
            with pytest.raises(RecordError) as info:
                pub.event("u1", features)
            assert info.value.reason == reason
        with pytest.raises(RecordError) as skew:
            pub.event("u1", FEATURES, ts=datetime.now(UTC) + timedelta(hours=2))
        assert skew.value.reason == Reason.CLOCK_SKEW
        with pytest.raises(RecordError, match="timezone-aware"):
            pub.event("u1", FEATURES, ts=datetime(2026, 1, 1))  # noqa: DTZ001
        with pytest.raises(RecordError, match="not valid for a binary label"):
            pub.label("e1", "u1", 0.5)
        pub.event("u1", FEATURES)
    assert pub.stats.sent == 1
    assert len(read_topic(settings, "events", 1, timeout=10)) == 1


def test_given_event_ids_and_times_are_kept(settings: Settings) -> None:
    ts = datetime.now(UTC) - timedelta(hours=1)
    with Publisher(settings) as pub:
        assert pub.event("u1", FEATURES, ts, event_id="backfill-1") == "backfill-1"
    (msg,) = read_topic(settings, "events", 1, timeout=10)
    raw = orjson.loads(msg.value())
    assert raw["schema_version"] == 1
    assert Event.from_json(msg.value()).ts == ts


def test_unreachable_broker_fails_clearly_instead_of_hanging(unit_settings: Settings) -> None:
    settings = unit_settings.replace(kafka_bootstrap="127.0.0.1:1", publish_timeout_seconds=2)
    failures: list[str] = []
    pub = Publisher(settings, on_delivery_error=lambda key, err: failures.append(err.str()))
    pub.event("u1", FEATURES)
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1") as info:
        pub.flush()
    assert "within 2s" in str(info.value) or "failed delivery" in str(info.value)


def test_bounded_buffer_raises_when_full(unit_settings: Settings) -> None:
    settings = unit_settings.replace(
        kafka_bootstrap="127.0.0.1:1", publish_timeout_seconds=1, publish_buffer_messages=10
    )
    pub = Publisher(settings)
    for _ in range(10):
        pub.event("u1", FEATURES)
    with pytest.raises(BrokerUnavailable, match="buffer of 10 records is full"):
        pub.event("u1", FEATURES)
