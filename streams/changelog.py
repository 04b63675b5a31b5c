"""The state changelog: each change written once, the commit record last.

A batch writes its changed keys to the changelog, then the partition's commit record.
After a crash between the two, the changelog holds keys of a batch that never
committed. Restoring reads the changelog in order, so the value each such key had
before it (as of the last commit) is known at that moment: :class:`Tails` keeps it,
per partition, for every key written after the partition's latest commit record, and
:class:`~streams.partition.PartitionState` puts those keys back and writes them again
before its next commit record.

The value before a key's uncommitted write survives compaction as long as that write
is younger than the changelog's ``min.compaction.lag.ms`` (see
:func:`loopline.kafka.changelog_topic_config`): the cleaner only compacts against
records older than that, and a restored partition rewrites its tail at its first commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

Value = bytes | None


def commit_key(partition: int) -> bytes:
    """The key of a partition's commit record in the state table."""
    return f"{partition}|commit|last".encode()


def partition_of(key: bytes) -> int | None:
    """The source partition a state key belongs to (keys are ``<partition>|...``)."""
    head, sep, _ = key.partition(b"|")
    return int(head) if sep and head.isdigit() else None


class Tails:
    """Per partition, the keys written after its latest commit record, with the value
    each had before (``None``: absent)."""

    def __init__(self) -> None:
        self._tails: dict[int, dict[bytes, Value]] = {}

    def observe(
        self, records: Iterable[tuple[bytes, Value]], current: Callable[[bytes], Value]
    ) -> None:
        """Changelog records in log order; ``current`` reads the table before them."""
        pending: dict[bytes, Value] = {}
        for key, value in records:
            p = partition_of(key)
            if p is None:
                continue
            if key == commit_key(p):
                self._tails.pop(p, None)
            else:
                tail = self._tails.setdefault(p, {})
                if key not in tail:
                    tail[key] = pending[key] if key in pending else current(key)
            pending[key] = value

    def take(self, partition: int) -> dict[bytes, Value]:
        """The partition's tail, once: it is reverted and rewritten by its taker."""
        return self._tails.pop(partition, {})

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._tails.pop(p, None)
