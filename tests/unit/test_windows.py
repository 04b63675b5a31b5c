from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loopline.contracts import Window
from loopline.windows import ExcludedWindows

T = datetime(2026, 1, 1, tzinfo=UTC)


def h(hours: float) -> datetime:
    return T + timedelta(hours=hours)


def test_windows_are_half_open() -> None:
    ws = ExcludedWindows([Window(h(1), h(2))])
    assert h(1) in ws
    assert h(1.99) in ws
    assert h(2) not in ws
    assert h(0.99) not in ws


def test_marking_merges_overlapping_and_touching_windows() -> None:
    ws = ExcludedWindows([Window(h(1), h(2)), Window(h(2), h(3)), Window(h(5), h(6))])
    ws.mark(Window(h(2.5), h(5.5)))
    assert list(ws) == [Window(h(1), h(6))]


def test_clearing_subtracts_and_splits() -> None:
    ws = ExcludedWindows([Window(h(0), h(10))])
    ws.clear(Window(h(4), h(6)))
    assert list(ws) == [Window(h(0), h(4)), Window(h(6), h(10))]
    ws.clear(Window(h(-1), h(5)))
    assert list(ws) == [Window(h(6), h(10))]
    ws.clear(Window(h(6), h(10)))
    assert not ws


def test_copy_is_independent() -> None:
    ws = ExcludedWindows([Window(h(0), h(1))])
    other = ws.copy()
    other.clear(Window(h(0), h(1)))
    assert h(0) in ws
    assert ws != other
