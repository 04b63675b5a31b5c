"""Reading topics back in tests."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from loopline.kafka import consumer_config
from loopline.settings import Settings


def read_topic(
    settings: Settings, name: str, expected: int, timeout: float = 60.0
) -> list[Message]:
    """Read a whole topic from the start (no consumer group) until ``expected`` records
    arrived or time ran out; reads half a second more so that extra records show too."""
    topic = settings.topic(name)
    consumer = Consumer(consumer_config(settings, group_id="loopline-tests"))
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(5000, 0.2):
                if msg.error() is None:
                    messages.append(msg)
            if len(messages) >= expected:
                deadline = min(deadline, time.monotonic() + 0.5)
    finally:
        consumer.close()
    return messages
