"""Workers killed with SIGKILL mid-stream, restarted, and sharing partitions: every
example is emitted exactly once and the books balance."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from loopline.publisher import Publisher
from loopline.settings import Settings
from tests.integration.streams.streams_support import (
    books,
    examples,
    partitions_taken,
    start_worker,
    stop_worker,
    wait_books,
    wait_for,
)

GOOD = {"price": 12.5, "hour": 9, "device": "mobile"}


@contextmanager
def publishing(settings: Settings, count: int, per_second: float) -> Iterator[threading.Thread]:
    """Publish ``count`` events, each followed by its label, at a steady pace in the background."""

    def run() -> None:
        with Publisher(settings) as pub:
            chunk = max(1, int(per_second / 20))
            for start in range(0, count, chunk):
                for i in range(start, min(count, start + chunk)):
                    entity = f"u{i % 50}"
                    event_id = pub.event(entity, GOOD, datetime.now(UTC), event_id=f"e{i}")
                    pub.label(event_id, entity, i % 2)
                pub.flush()
                stop.wait(0.05)

    stop = threading.Event()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(120)


def assert_exactly_once(settings: Settings, count: int) -> None:
    result = wait_books(
        settings, count, count, timeout=90, settled=lambda b: b.get("labels_joined") == count
    )
    assert result.events_balance == 0 and result.labels_balance == 0
    assert result.get("examples") == count and result.get("duplicates") == 0
    ids = Counter(e["event_id"] for e in examples(settings, count, timeout=60))
    assert len(ids) == count
    assert [i for i, n in ids.items() if n > 1] == []


def test_worker_killed_and_restarted_mid_stream(settings: Settings) -> None:
    count = 4000
    first = start_worker(settings, "first")
    second = None
    try:
        wait_for(lambda: partitions_taken(settings, "first"), 60, "the worker to take partitions")
        with publishing(settings, count, per_second=1000):
            wait_for(lambda: books(settings).get("events") >= 800, 60, "the worker to get going")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            assert books(settings).get("events") < count, "the kill must land mid-stream"
            second = start_worker(settings, "second")
        assert_exactly_once(settings, count)
    finally:
        stop_worker(first)
        if second is not None:
            stop_worker(second)


def test_two_workers_share_partitions_through_rebalances_and_a_kill(settings: Settings) -> None:
    count = 5000
    a = start_worker(settings, "a")
    b = None
    try:
        wait_for(lambda: partitions_taken(settings, "a"), 60, "worker a to take partitions")
        with publishing(settings, count, per_second=250):
            b = start_worker(settings, "b")
            wait_for(lambda: partitions_taken(settings, "b"), 60, "worker b to take partitions")
            assert partitions_taken(settings, "a") - partitions_taken(settings, "b")
            a.send_signal(signal.SIGKILL)
            a.wait(10)
            assert books(settings).get("events") < count, "the kill must land mid-stream"
        assert_exactly_once(settings, count)
        assert partitions_taken(settings, "b") == set(range(settings.partitions))
    finally:
        stop_worker(a)
        if b is not None:
            stop_worker(b)
