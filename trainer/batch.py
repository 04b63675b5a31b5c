"""Feeding a batch of ``examples`` records to a learner, tracking the position exactly.

``position`` maps partition to the next offset to learn. A record below it was
already handled (a redelivery) and is skipped; a record whose event id was handled
already (the same event at another offset) is counted as a duplicate and not learned;
a bad record is counted, logged with its coordinates and passed over. Nothing here
crashes on input.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError

from loopline.errors import RecordError
from trainer.decode import decode
from trainer.learner import Learner

log = logging.getLogger(__name__)


def fetch(consumer: Consumer, size: int, timeout: float) -> list[Any]:
    """Up to ``size`` records: what is queued now, else wait for the first one.

    ``consume(size, timeout)`` would wait out the whole timeout for a batch to fill.
    """
    messages = consumer.consume(size, 0)
    if messages:
        return messages
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(size - 1, 0)]


def learn_batch(
    learner: Learner,
    messages: Sequence[Any],
    position: dict[int, int],
    until: dict[int, int] | None = None,
) -> int:
    """Handle the records, in order; return how many moved the position.

    With ``until``, records at or past ``until[partition]`` are left alone (replays).
    ``messages`` are confluent-kafka Messages, untyped here: a record read from a
    partition always has a partition and an offset, and this loop runs per example.
    """
    observe = learner.observe
    admit = learner.recent.admit
    counts = learner.counts
    handled = 0
    for msg in messages:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
            continue
        partition, offset = msg.partition(), msg.offset()
        expected = position.get(partition)
        if expected is not None and offset < expected:
            continue  # redelivered: this offset was handled already
        if until is not None and offset >= until.get(partition, 0):
            continue
        position[partition] = offset + 1
        handled += 1
        try:
            event_id, ts, features, label = decode(msg.value())
            if not admit(event_id, ts.timestamp(), partition):
                counts.duplicates += 1
                continue
            observe(event_id, ts, features, label)
        except RecordError as exc:
            counts.invalid += 1
            log.warning("invalid example at %s[%s]@%s: %s", msg.topic(), partition, offset, exc)
        except (ValueError, TypeError, ArithmeticError, KeyError) as exc:
            counts.invalid += 1
            log.error(
                "model rejected example at %s[%s]@%s: %r", msg.topic(), partition, offset, exc
            )
    return handled
