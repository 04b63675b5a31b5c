from __future__ import annotations

from confluent_kafka import Consumer, Producer

from loopline.kafka import consumer_config, create_topics, end_offsets, producer_config, topic_sizes
from loopline.settings import Settings


def test_create_topics_is_idempotent(settings: Settings) -> None:
    assert set(create_topics(settings).values()) == {"exists"}


def test_end_offsets_count_every_record_of_a_batch(settings: Settings) -> None:
    producer = Producer(producer_config(settings, **{"linger.ms": 100}))
    for _ in range(4):  # one batch: some brokers report only the batch's base offset + 1
        producer.produce(settings.topic("events"), b"{}", b"same-key", partition=0)
    assert producer.flush(10) == 0
    producer.produce(settings.topic("events"), b"{}", b"k", partition=1)
    assert producer.flush(10) == 0
    consumer = Consumer(consumer_config(settings, group_id="end-offsets-test"))
    try:
        assert end_offsets(consumer, settings.topic("events")) == {0: 4, 1: 1, 2: 0}
    finally:
        consumer.close()
    assert topic_sizes(settings)["events"] == 5
