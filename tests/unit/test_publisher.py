"""The Publisher's failure book against a broker that is not there (no server needed)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import KafkaError, Message

from loopline.contracts import FeatureValue
from loopline.errors import BrokerUnavailable, PublishError
from loopline.publisher import FailedRecord, Publisher
from loopline.settings import Settings

FEATURES: dict[str, FeatureValue] = {
    "price": 12.0,
    "category": "wool",
    "hour": 9,
    "device": "mobile",
}


@pytest.fixture
def nowhere(unit_settings: Settings) -> Settings:
    return unit_settings.replace(kafka_bootstrap="127.0.0.1:1", publish_timeout_seconds=1)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_a_failure_report_names_the_event_of_events_and_labels() -> None:
    err = KafkaError(KafkaError._MSG_TIMED_OUT)
    for value in (
        orjson.dumps({"event_id": "e1", "entity_id": "u1", "features": {}}),
        orjson.dumps({"event_id": "e1", "entity_id": "u1", "label": 1.0}),
    ):
        msg = Message(topic="p.labels", key=b"u1", value=value, error=err)
        record = FailedRecord.from_report(err, msg)
        assert (record.topic, record.key, record.value, record.event_id) == (
            "p.labels",
            "u1",
            value,
            "e1",
        )
        assert record.timed_out
    refused = FailedRecord.from_report(
        KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), Message(topic="t", value=b"not json")
    )
    assert (refused.event_id, refused.key, refused.timed_out) == ("", "", False)


def test_failures_are_reported_without_polling_and_kept_until_taken(nowhere: Settings) -> None:
    reported: list[FailedRecord] = []
    pub = Publisher(nowhere, on_error=reported.append)
    ids = [pub.event(f"u{i}", FEATURES) for i in range(3)]
    pub.label(ids[0], "u0", 1)
    wait_until(lambda: len(reported) == 4)  # the delivery thread served them
    assert sorted(r.event_id for r in reported) == sorted([*ids, ids[0]])
    (label,) = [r for r in reported if r.topic == nowhere.topic("labels")]
    assert (label.event_id, label.key) == (ids[0], "u0")
    assert orjson.loads(label.value)["label"] == 1.0
    assert pub.stats.failed == pub.stats.failed_kept == 4

    for _ in range(3):
        with pytest.raises(BrokerUnavailable, match="4 records failed delivery") as info:
            pub.flush()
        assert reported[0].event_id in str(info.value)
        assert "127.0.0.1:1" in str(info.value)

    assert pub.take_failed() == reported
    assert pub.take_failed() == []
    assert pub.stats.failed_kept == 0
    assert pub.stats.failed == 4
    pub.close()  # nothing kept, nothing in flight


def test_closing_raises_while_records_are_lost_and_they_stay_takeable(nowhere: Settings) -> None:
    with (
        pytest.raises(BrokerUnavailable, match="1 record failed delivery"),
        Publisher(nowhere) as pub,
    ):
        event_id = pub.event("u1", FEATURES)
    with pytest.raises(PublishError, match="closed"):
        pub.event("u1", FEATURES)
    with pytest.raises(BrokerUnavailable):
        pub.close()
    assert [r.event_id for r in pub.take_failed()] == [event_id]
    pub.close()


def test_a_callback_that_raises_loses_nothing(nowhere: Settings) -> None:
    calls: list[str] = []

    def broken(record: FailedRecord) -> None:
        calls.append(record.event_id)
        raise RuntimeError("app bug")

    pub = Publisher(nowhere, on_error=broken)
    first = pub.event("u1", FEATURES)
    wait_until(lambda: len(calls) == 1)
    second = pub.event("u2", FEATURES)  # the delivery thread survived
    wait_until(lambda: len(calls) == 2)
    assert calls == [first, second]
    assert [r.event_id for r in pub.take_failed()] == [first, second]


def test_on_error_must_be_callable(nowhere: Settings) -> None:
    with pytest.raises(TypeError, match="on_error must be callable"):
        Publisher(nowhere, on_error="print")  # type: ignore[arg-type]


def test_publishing_stops_when_the_kept_failures_are_full(nowhere: Settings) -> None:
    pub = Publisher(nowhere.replace(publish_buffer_messages=3))
    for i in range(3):
        pub.event(f"u{i}", FEATURES)
    wait_until(lambda: pub.stats.failed_kept == 3)
    with pytest.raises(PublishError, match="keeps at most 3 failed records"):
        pub.event("u9", FEATURES)
    assert len(pub.take_failed()) == 3
    pub.event("u9", FEATURES)  # room again
    assert pub.stats.sent == 4


def test_a_resend_that_fails_keeps_what_it_did_not_hand_over(nowhere: Settings) -> None:
    pub = Publisher(nowhere)
    ids = {pub.event(f"u{i}", FEATURES) for i in range(2)}
    wait_until(lambda: pub.stats.failed_kept == 2)
    with pytest.raises(BrokerUnavailable):
        pub.close()
    failed = pub.take_failed()
    with pytest.raises(PublishError, match="closed"):
        pub.resend(failed)
    assert pub.take_failed() == failed
    assert {r.event_id for r in failed} == ids


def test_a_resend_publishes_the_same_records_again(nowhere: Settings) -> None:
    pub = Publisher(nowhere)
    pub.event("u1", FEATURES)
    wait_until(lambda: pub.stats.failed_kept == 1)
    (first,) = pub.take_failed()
    pub.resend([first])
    wait_until(lambda: pub.stats.failed_kept == 1)
    (again,) = pub.take_failed()
    assert (again.topic, again.key, again.value, again.event_id) == (
        first.topic,
        first.key,
        first.value,
        first.event_id,
    )
    assert pub.stats.sent == 2


def test_a_dropped_publisher_stops_its_delivery_thread(nowhere: Settings) -> None:
    pub = Publisher(nowhere)
    thread = pub._poller
    assert thread.is_alive()
    del pub
    deadline = time.monotonic() + 5
    while thread.is_alive() and time.monotonic() < deadline:
        gc.collect()  # the Publisher is in a reference cycle with its producer
        thread.join(timeout=0.2)
    assert not thread.is_alive()
