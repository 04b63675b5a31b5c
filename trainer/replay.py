"""Replaying ``examples`` between two positions into a learner.

Used by ``loopline replay --from CHECKPOINT``: the learner restored from an earlier
checkpoint relearns everything up to the trainer's current position, honouring the
excluded windows it holds, so an anomalous stretch learned before it was marked is
undone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from loopline.errors import CheckpointError
from loopline.kafka import consumer_config
from loopline.settings import Settings
from trainer.batch import fetch, learn_batch
from trainer.learner import Learner

log = logging.getLogger(__name__)


def replay(
    settings: Settings,
    learner: Learner,
    start: dict[int, int],
    target: dict[int, int],
    idle_timeout: float = 30.0,
    batch_size: int = 2000,
    keep_alive: Callable[[], None] | None = None,
) -> int:
    """Learn every record from ``start`` up to ``target`` (per partition); return how many.

    ``keep_alive`` runs once a batch (the trainer renews its lease there; it raises to
    stop the replay). Raises CheckpointError if ``start`` is past ``target``, if retention
    deleted examples it would need (a replay never skips silently), or if the records
    stop coming.
    """
    ahead = {p: o for p, o in start.items() if o > target.get(p, 0)}
    if ahead:
        raise CheckpointError(f"replay start {ahead} is past the current position {target}")
    topic = settings.topic("examples")
    position = dict(start)
    remaining = {p for p, end in target.items() if end > position.get(p, 0)}
    if not remaining:
        return 0
    consumer = Consumer(
        consumer_config(settings, group_id=f"{settings.topic_prefix}trainer.replay")
    )
    handled = 0
    try:
        deleted = {}
        for p in remaining:
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if position.get(p, 0) < low:
                deleted[p] = (position.get(p, 0), low)
        if deleted:
            spans = ", ".join(
                f"partition {p}: {a} to {b - 1}" for p, (a, b) in sorted(deleted.items())
            )
            raise CheckpointError(
                f"cannot replay exactly: examples were deleted by retention ({spans}); "
                "replay from a newer checkpoint"
            )
        consumer.assign(
            [TopicPartition(topic, p, position.get(p, OFFSET_BEGINNING)) for p in remaining]
        )
        last_progress = time.monotonic()
        while remaining:
            messages = fetch(consumer, batch_size, 0.5)
            if keep_alive is not None:
                keep_alive()
            n = learn_batch(learner, messages, position, until=target)
            handled += n
            if n:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > idle_timeout:
                raise CheckpointError(
                    f"replay stalled at {position}, short of {target} for {idle_timeout:g}s"
                )
            remaining = {p for p in remaining if position.get(p, 0) < target[p]}
    finally:
        consumer.close()
    log.info("replayed %d examples up to %s", handled, target)
    return handled
