"""Anomalous event-time windows: examples inside them are never learned.

Marking merges overlapping windows; clearing subtracts, so clearing part of a marked
window leaves the rest excluded.

>>> from datetime import UTC, datetime
>>> day = lambda d: datetime(2026, 1, d, tzinfo=UTC)
>>> ws = ExcludedWindows()
>>> ws.mark(Window(day(1), day(3)))
>>> ws.clear(Window(day(2), day(3)))
>>> day(1) in ws, day(2) in ws
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from loopline.contracts import Window


class ExcludedWindows:
    """A set of disjoint, sorted half-open intervals."""

    __slots__ = ("_windows",)

    def __init__(self, windows: Iterable[Window] = ()) -> None:
        self._windows: tuple[Window, ...] = ()
        for window in windows:
            self.mark(window)

    def __contains__(self, ts: datetime) -> bool:
        return any(w.start <= ts < w.end for w in self._windows)

    def __bool__(self) -> bool:
        return bool(self._windows)

    def __iter__(self) -> Iterator[Window]:
        return iter(self._windows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExcludedWindows) and self._windows == other._windows

    def __repr__(self) -> str:
        return f"ExcludedWindows({list(self._windows)!r})"

    def mark(self, window: Window) -> None:
        start, end = window.start, window.end
        kept = []
        for w in self._windows:
            if w.end < start or w.start > end:
                kept.append(w)
            else:
                start, end = min(start, w.start), max(end, w.end)
        kept.append(Window(start, end))
        self._windows = tuple(sorted(kept, key=lambda w: w.start))

    def clear(self, window: Window) -> None:
        kept = []
        for w in self._windows:
            if w.end <= window.start or w.start >= window.end:
                kept.append(w)
                continue
            if w.start < window.start:
                kept.append(Window(w.start, window.start))
            if w.end > window.end:
                kept.append(Window(window.end, w.end))
        self._windows = tuple(sorted(kept, key=lambda w: w.start))

    def reset(self, windows: Iterable[Window]) -> None:
        """Replace every window, in place (learners hold a reference to this set)."""
        self._windows = ()
        for window in windows:
            self.mark(window)

    def copy(self) -> ExcludedWindows:
        return ExcludedWindows(self._windows)
