"""Which holdout rows a checkpoint is judged on: recent, settled, outside anomalous windows."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loopline.contracts import Example, Window
from loopline.spec import DEFAULT_SPEC, Spec, load_spec, parse_spec
from loopline.windows import ExcludedWindows
from pusher.recent import is_settled, select

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def spec_with(**qualification: Any) -> Spec:
    data = tomllib.loads(DEFAULT_SPEC.read_text())
    data["qualification"].update(qualification)
    return parse_spec(data)


def row(i: int, age: float, *, label: float = 0.0, observed: bool = True) -> Example:
    return Example(f"e{i}", "u", NOW - timedelta(seconds=age), {}, label, label_observed=observed)


def ids(rows: tuple[Example, ...]) -> list[str]:
    return [r.event_id for r in rows]


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(DEFAULT_SPEC)


def test_a_label_settles_at_its_horizon_however_it_arrived(spec: Spec) -> None:
    horizon = spec.label.horizon_seconds
    assert not is_settled(spec, row(1, horizon - 1, label=1.0), NOW)  # an early click
    assert is_settled(spec, row(2, horizon, label=1.0), NOW)
    assert is_settled(spec, row(3, horizon + 5, observed=False), NOW)  # the default, at the horizon


def test_with_settle_label_an_explicit_label_settles_on_arrival() -> None:
    data = tomllib.loads(DEFAULT_SPEC.read_text())
    data["label"] |= {"on_missing": "drop"}
    data["label"].pop("default")
    data["qualification"]["settle"] = "label"
    spec = parse_spec(data)
    assert is_settled(spec, row(1, 1, label=0.0), NOW)
    assert not is_settled(spec, row(2, 1, observed=False), NOW)


def test_early_labels_are_left_out_of_the_metric_but_not_of_the_label_free_checks(
    spec: Spec,
) -> None:
    rows = [row(1, 300), row(2, 200), row(3, 5, label=1.0), row(4, 2, label=1.0)]
    recent = select(spec, rows, NOW)
    assert ids(recent.settled) == ["e1", "e2"]
    assert ids(recent.rows) == ["e1", "e2", "e3", "e4"]
    assert recent.figures()["holdout"] == 2 and recent.figures()["holdout_recent"] == 4


def test_rows_inside_anomalous_windows_are_left_out(spec: Spec) -> None:
    rows = [row(i, 1000 - i * 100) for i in range(10)]  # ages 1000, 900, ... 100 s
    burst = Window(NOW - timedelta(seconds=650), NOW - timedelta(seconds=350))
    recent = select(spec, rows, NOW, ExcludedWindows([burst]))
    assert ids(recent.settled) == ["e0", "e1", "e2", "e3", "e7", "e8", "e9"]
    assert recent.anomalous == 3 and recent.figures()["holdout_anomalous"] == 3


def test_the_window_keeps_the_newest_by_event_time_and_count() -> None:
    spec = spec_with(window_seconds=600, window_examples=200, min_holdout=100)
    # 400 settled rows one second apart, shuffled: arrival order does not matter.
    rows = [row(i, 100 + i) for i in range(400)]
    rows = rows[::2] + rows[1::2]
    recent = select(spec, rows, NOW)
    assert len(recent.settled) == 200
    assert ids(recent.settled) == [f"e{i}" for i in range(199, -1, -1)]  # oldest first
    # By event time: rows older than window_seconds before the newest are out.
    old = [row(i, 100 + i * 10) for i in range(100)]  # ages 100 ... 1090 s
    assert len(select(spec, old, NOW).settled) == 61  # ages 100 ... 700 s


def test_the_window_is_anchored_on_the_newest_settled_row_not_the_clock(spec: Spec) -> None:
    # A backfill of last year: nothing is recent by the clock, all of it by event time.
    rows = [row(i, 365 * 86400 + i) for i in range(300)]
    recent = select(spec, rows, NOW)
    assert len(recent.settled) == 300
