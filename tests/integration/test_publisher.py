from __future__ import annotations

import collections
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from loopline.contracts import Event, Label
from loopline.errors import BrokerUnavailable, PublishError, Reason, RecordError
from loopline.kafka import create_topics
from loopline.publisher import FailedRecord, Publisher
from loopline.settings import Settings
from tests.forwarder import broker_behind_forwarder
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
    pub = Publisher(settings)
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


def test_records_published_while_the_broker_is_cut_off_are_kept_until_resent(
    settings: Settings, tmp_path: Path
) -> None:
    with broker_behind_forwarder(tmp_path / "broker") as (fwd, bootstrap):
        settings = settings.replace(kafka_bootstrap=bootstrap, publish_timeout_seconds=3)
        create_topics(settings)
        reported: list[FailedRecord] = []
        pub = Publisher(settings, on_error=reported.append)
        before = [pub.event(f"u{i}", FEATURES) for i in range(20)]
        pub.flush()
        assert fwd.accepted > 0  # the traffic does go through the forwarder

        fwd.cut()
        during = [pub.event(f"u{i}", FEATURES) for i in range(30)]
        for i, event_id in enumerate(during[:10]):
            pub.label(event_id, f"u{i}", 1)
        # Reported without the app flushing or polling: the delivery thread serves them.
        deadline = time.monotonic() + 3 + 10
        while len(reported) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(reported) == 40
        assert pub.stats.failed_kept == 40

        for _ in range(3):  # every call, not once
            with pytest.raises(BrokerUnavailable, match="40 records failed delivery") as info:
                pub.flush()
            assert reported[0].event_id in str(info.value)
        with pytest.raises(PublishError):
            pub.close()  # closing does not make them go away either

        failed = pub.take_failed()
        pub.flush()  # taken: the app owns them now
        events = [r for r in failed if r.topic == settings.topic("events")]
        labels = [r for r in failed if r.topic == settings.topic("labels")]
        assert failed == reported  # what on_error saw, in the order they failed
        assert sorted(r.event_id for r in events) == sorted(during)
        assert sorted(r.event_id for r in labels) == sorted(during[:10])
        assert all(r.timed_out for r in failed)
        assert {r.key for r in labels} == {f"u{i}" for i in range(10)}

        fwd.restore()
        with Publisher(settings) as again:
            again.resend(failed)

        counts = collections.Counter(
            Event.from_json(m.value()).event_id for m in read_topic(settings, "events", 50)
        )
        assert counts == collections.Counter(before + during)  # 0 lost, none twice
        label_counts = collections.Counter(
            Label.from_json(m.value()).event_id for m in read_topic(settings, "labels", 10)
        )
        assert label_counts == collections.Counter(during[:10])


def test_resending_through_the_same_publisher_after_an_outage_delivers(
    settings: Settings, tmp_path: Path
) -> None:
    with broker_behind_forwarder(tmp_path / "broker") as (fwd, bootstrap):
        settings = settings.replace(kafka_bootstrap=bootstrap, publish_timeout_seconds=3)
        create_topics(settings)
        with Publisher(settings) as pub:
            fwd.cut()
            ids = [pub.event(f"u{i}", FEATURES) for i in range(10)]
            with pytest.raises(BrokerUnavailable):
                pub.flush()
            failed = pub.take_failed()
            assert sorted(r.event_id for r in failed) == sorted(ids)
            fwd.restore()
            pub.resend(failed)
        assert pub.stats.delivered == 10
        received = [Event.from_json(m.value()).event_id for m in read_topic(settings, "events", 10)]
        assert sorted(received) == sorted(ids)
