"""Event ids handled recently, so a duplicate on ``examples`` is dropped by event id.

Offsets stop a redelivered record; they cannot stop the same event arriving again at
another offset (a re-published backfill, a zombie streams worker). Ids are kept for
``horizon`` seconds of event time behind the newest event seen on each partition: an
event is keyed by entity, so its duplicates land on its partition, and a partition
that lags behind the others keeps its own ids. Ids sit in time buckets so that
forgetting the old ones costs one dict deletion per id. The state goes into each
checkpoint, so a restore drops exactly what the uninterrupted run would have.

>>> from datetime import UTC, datetime
>>> recent = RecentEvents(horizon=3600)
>>> t = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
>>> recent.admit("e1", t, 0), recent.admit("e1", t, 0), recent.admit("e2", t, 1)
(True, False, True)
>>> RecentEvents.load(recent.state(), 3600).admit("e1", t, 0)
False
"""

from __future__ import annotations

from typing import Any

# Buckets per horizon: more forget closer to the horizon, fewer cost less per scan.
BUCKETS = 16


class RecentEvents:
    """Event ids seen within ``horizon`` seconds (event time) of each partition's newest."""

    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self.width = max(horizon / BUCKETS, 1.0)
        self._ids: dict[str, int] = {}  # event id -> partition
        self._buckets: dict[int, dict[int, list[str]]] = {}  # partition -> bucket -> ids
        self._newest: dict[int, float] = {}  # partition -> newest event time
        self._kept: dict[int, int] = {}  # partition -> oldest bucket kept

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def admit(self, event_id: str, ts: float, partition: int) -> bool:
        """True the first time ``event_id`` is seen (and remember it); False for a duplicate.

        ``ts`` is the event time in seconds since the epoch.
        """
        if event_id in self._ids:
            return False
        self._ids[event_id] = partition
        buckets = self._buckets.get(partition)
        if buckets is None:
            buckets = self._buckets[partition] = {}
        bucket = int(ts // self.width)
        ids = buckets.get(bucket)
        if ids is None:
            buckets[bucket] = [event_id]
        else:
            ids.append(event_id)
        if ts > self._newest.get(partition, float("-inf")):
            self._newest[partition] = ts
            oldest = int((ts - self.horizon) // self.width)  # holds ts - horizon: kept
            if oldest > self._kept.get(partition, oldest - 1):
                self._kept[partition] = oldest
                self._forget(partition, oldest)
        return True

    def _forget(self, partition: int, oldest: int) -> None:
        buckets = self._buckets[partition]
        for bucket in [b for b in buckets if b < oldest]:
            for event_id in buckets.pop(bucket):
                self._ids.pop(event_id, None)

    def state(self) -> dict[str, Any]:
        """A JSON document (string keys): ``load`` rebuilds exactly this structure."""
        return {
            "width": self.width,
            "newest": {str(p): ts for p, ts in self._newest.items()},
            "buckets": {
                str(p): {str(b): list(ids) for b, ids in sorted(bs.items())}
                for p, bs in self._buckets.items()
            },
        }

    @classmethod
    def load(cls, state: dict[str, Any], horizon: float) -> RecentEvents:
        """Rebuild from :meth:`state`, for ``horizon`` (rebucketed if it changed)."""
        recent = cls(horizon)
        scale = float(state["width"]) / recent.width
        for partition, buckets in state["buckets"].items():
            p = int(partition)
            into = recent._buckets.setdefault(p, {})
            for bucket, ids in buckets.items():
                into.setdefault(int(int(bucket) * scale), []).extend(ids)
                recent._ids.update(dict.fromkeys(ids, p))
        for partition, newest in state["newest"].items():
            p, ts = int(partition), float(newest)
            recent._newest[p] = ts
            recent._kept[p] = int((ts - recent.horizon) // recent.width)
            recent._buckets.setdefault(p, {})
            recent._forget(p, recent._kept[p])
        return recent
