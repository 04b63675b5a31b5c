"""Random bytes and random JSON into ``events`` and ``labels``: the worker survives and
every record is accounted for."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from confluent_kafka import Producer
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from loopline.kafka import producer_config
from loopline.settings import Settings
from tests.integration.streams.streams_support import wait_books, worker

NOW = datetime.now(UTC)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
entities = st.sampled_from(["u1", "u2", "u3", ""]) | st.text(max_size=6)
timestamps = st.one_of(
    st.integers(-3600, 3600).map(lambda s: (NOW + timedelta(seconds=s)).isoformat()),
    st.sampled_from(["2026-13-01T00:00:00", "yesterday", "", "2020-01-01T00:00:00+00:00"]),
    scalars,
)
feature_names = st.sampled_from(
    ["price", "category", "hour", "device", "recent_views", "discount", "colour"]
)


@st.composite
def near_events(draw: Any) -> tuple[bytes | None, bytes]:
    entity = draw(entities)
    record = {
        "schema_version": draw(st.sampled_from([1, 1, 1, 2, "1", None])),
        "event_id": draw(st.text(min_size=0, max_size=8) | scalars),
        "entity_id": entity,
        "ts": draw(timestamps),
        "features": draw(st.dictionaries(feature_names, scalars, max_size=7) | json_values),
        "label": draw(st.sampled_from([0, 1, 0.5, -1, True, "1", None])),
    }
    drop = draw(st.sets(st.sampled_from(list(record)), max_size=2))
    record = {k: v for k, v in record.items() if k not in drop}
    key = (
        entity.encode()
        if draw(st.booleans()) and isinstance(entity, str)
        else draw(st.none() | st.binary(max_size=6))
    )
    return key, orjson.dumps(record)


records = st.tuples(
    st.sampled_from(["events", "labels"]),
    st.one_of(
        st.tuples(st.none() | st.binary(max_size=6), st.binary(max_size=200)),
        st.tuples(st.none() | st.binary(max_size=6), json_values.map(orjson.dumps)),
        near_events(),
    ),
)


def test_random_records_never_crash_a_worker_and_are_all_accounted(settings: Settings) -> None:
    produced: Counter[str] = Counter()
    producer = Producer(producer_config(settings))

    @given(record=records)
    @hsettings(
        max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def feed(record: tuple[str, tuple[bytes | None, bytes]]) -> None:
        topic, (key, value) = record
        producer.produce(settings.topic(topic), value, key)
        produced[topic] += 1

    with worker(settings) as proc:
        feed()
        producer.produce(settings.topic("events"), None, b"u1")  # a tombstone
        produced["events"] += 1
        assert producer.flush(20) == 0
        books = wait_books(
            settings,
            produced["events"],
            produced["labels"],
            timeout=90,
            settled=lambda b: b.get("labels_waiting") == 0,
        )
        assert proc.poll() is None, "the worker must survive any input"
    assert books.get("events") == produced["events"] and books.get("labels") == produced["labels"]
    assert books.events_balance == 0 and books.labels_balance == 0
    assert sum(books.rejected.values()) >= 1
