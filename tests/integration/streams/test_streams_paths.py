"""Each path of the streams against the real broker and Redis, through a real worker."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from feature_repo.online import OnlineFeatures
from loopline.kafka import producer_config
from loopline.publisher import Publisher
from loopline.settings import Settings
from tests.integration.streams.streams_support import (
    deadletters,
    examples,
    spec_variant,
    wait_books,
    worker,
)

GOOD = {"price": 12.5, "hour": 9, "device": "mobile"}


@pytest.fixture
def short_horizon(settings: Settings, tmp_path: Path) -> Settings:
    return settings.replace(spec=spec_variant(tmp_path, label={"horizon_seconds": 4}))


def raw_producer(settings: Settings) -> Producer:
    return Producer(producer_config(settings))


def test_valid_events_and_labels_become_examples_with_served_features(
    short_horizon: Settings,
) -> None:
    settings = short_horizon
    now = datetime.now(UTC)
    with Publisher(settings) as pub:
        ids = [
            pub.event(f"u{i % 3}", {**GOOD, "recent_views": i}, now + timedelta(milliseconds=i))
            for i in range(6)
        ]
        for event_id, i in zip(ids[:4], range(4), strict=True):
            pub.label(event_id, f"u{i % 3}", i % 2)
    with worker(settings):
        books = wait_books(
            settings, 6, 4, settled=lambda b: b.get("pending") == 0 and b.get("labels_joined") == 4
        )
        got = {e["event_id"]: e for e in examples(settings, 6)}
    assert books.events_balance == 0 and books.labels_balance == 0
    assert books.get("examples_labelled") == 4 and books.get("examples_defaulted") == 2
    assert len(got) == 6
    first = got[ids[0]]
    assert first["label"] == 0 and first["label_observed"] is True
    assert first["imputed"] == ["category", "discount"]
    assert first["features"]["category"] == "unknown"
    assert first["features"]["impressions_1h"] == 0
    assert got[ids[1]]["label"] == 1
    assert got[ids[3]]["features"]["impressions_1h"] == 1  # u0 had one impression before
    assert got[ids[4]]["label_observed"] is False and got[ids[4]]["label"] == 0
    store = OnlineFeatures(settings, settings.load_spec())
    try:
        u0 = store.read(["u0"])[0]
    finally:
        store.close()
    assert u0["impressions_1h"] == 2
    assert u0["click_rate_24h"] == pytest.approx(0.5)


def test_a_spec_without_entity_features_makes_examples_of_request_features(
    settings: Settings, tmp_path: Path
) -> None:
    path = spec_variant(tmp_path, label={"horizon_seconds": 4}, entity_features={})
    settings = settings.replace(spec=path)
    assert settings.load_spec().entity.features == {}
    now = datetime.now(UTC)
    with Publisher(settings) as pub:
        ids = [pub.event(f"u{i}", GOOD, now + timedelta(milliseconds=i)) for i in range(3)]
        pub.label(ids[0], "u0", 1)
    with worker(settings):
        wait_books(
            settings, 3, 1, settled=lambda b: b.get("pending") == 0 and b.get("labels_joined") == 1
        )
        got = {e["event_id"]: e for e in examples(settings, 3)}
    assert got[ids[0]]["label"] == 1 and got[ids[1]]["label"] == 0
    assert set(got[ids[0]]["features"]) == set(settings.load_spec().features)


def _event(
    event_id: str, entity: str, ts: datetime, features: dict[str, object], **extra: object
) -> bytes:
    record = {
        "schema_version": 1,
        "event_id": event_id,
        "entity_id": entity,
        "ts": ts.isoformat(),
        "features": features,
        "source": "test",
    }
    return orjson.dumps({**record, **extra})


def _label(event_id: str, entity: str, ts: datetime, value: object) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "event_id": event_id,
            "entity_id": entity,
            "ts": ts.isoformat(),
            "label": value,
        }
    )


def test_rejects_duplicates_late_and_unknown_labels_are_all_accounted(
    short_horizon: Settings,
) -> None:
    settings = short_horizon
    events, labels = settings.topic("events"), settings.topic("labels")
    now = datetime.now(UTC)
    bad_events = {
        "malformed_json": (b"u9", b"{not json"),
        "missing_field": (
            b"u9",
            orjson.dumps(
                {"schema_version": 1, "event_id": "x1", "ts": now.isoformat(), "features": GOOD}
            ),
        ),
        "wrong_type": (b"u9", _event("x2", "u9", now, {**GOOD, "price": "cheap"})),
        "out_of_range": (b"u9", _event("x3", "u9", now, {**GOOD, "hour": 25})),
        "unknown_feature": (b"u9", _event("x4", "u9", now, {**GOOD, "colour": "red"})),
        "clock_skew": (b"u9", _event("x5", "u9", now + timedelta(days=1), GOOD)),
        "too_old": (b"u9", _event("x6", "u9", now - timedelta(days=30), GOOD)),
        "too_large": (b"u9", _event("x7", "u9", now, GOOD, source="y" * 20_000)),
        "unsupported_schema": (b"u9", _event("x8", "u9", now, GOOD, schema_version=2)),
        "key_mismatch": (b"someone-else", _event("x9", "u9", now, GOOD)),
    }
    producer = raw_producer(settings)
    for key, value in bad_events.values():
        producer.produce(events, value, key)
    producer.produce(events, _event("e1", "u1", now, GOOD), b"u1")
    producer.produce(events, _event("e2", "u2", now, GOOD), b"u2")
    producer.produce(events, _event("e1", "u1", now, GOOD), b"u1")  # duplicate event
    producer.flush(10)
    producer.produce(labels, _label("e1", "u1", now, 1), b"u1")
    producer.produce(labels, _label("e1", "u1", now, 1), b"u1")  # duplicate label
    producer.produce(labels, _label("e1", "u1", now, 0.5), b"u1")  # not a binary label
    producer.produce(labels, _label("nope", "u1", now, 1), b"u1")  # no such event
    producer.flush(10)
    with worker(settings):
        # e2 gets no label: at the horizon the spec's default applies.
        wait_books(settings, 13, 4, settled=lambda b: b.get("examples_defaulted") == 1)
        producer.produce(
            labels, _label("e2", "u2", now + timedelta(seconds=1), 1), b"u2"
        )  # too late
        producer.flush(10)
        books = wait_books(
            settings,
            13,
            5,
            settled=lambda b: b.get("labels_waiting") == 0 and b.get("labels_late") == 1,
        )
        got = examples(settings, 2)
        dead = deadletters(settings, 13)
    assert books.events_balance == 0 and books.labels_balance == 0
    assert (
        books.get("examples") == 2
        and books.get("duplicates") == 1
        and books.get("labels_duplicates") == 1
    )
    assert books.get("deadlettered") == len(bad_events) and books.get("labels_deadlettered") == 3
    assert sorted((e["event_id"], e["label"], e["label_observed"]) for e in got) == [
        ("e1", 1, True),
        ("e2", 0, False),
    ]
    by_reason = Counter(d["reason"] for d in dead)
    assert by_reason == Counter(
        {**dict.fromkeys(bad_events, 1), "out_of_range": 2, "unknown_event": 1, "expired_event": 1}
    )
    originals = {value: key for key, value in bad_events.values()}
    for d in dead:
        assert d["source_topic"] in (events, labels)
        assert (
            int(d["source_offset"]) >= 0 and 0 <= int(d["source_partition"]) < settings.partitions
        )
        if d["source_topic"] == events:
            assert originals[d["value"]] == d["key"]
    assert (
        books.rejected["events.malformed_json"] == 1 and books.rejected["labels.expired_event"] == 1
    )
