"""The rows a checkpoint is judged on: the recent holdout, outside anomalous windows, settled.

From the holdout examples the pusher keeps, in three steps:

1. examples inside a window operators marked anomalous are left out: no model should
   be judged on what no model may learn;
2. of the rest, *settled* ones are those whose label can no longer change nor be
   joined by late ones: their event time plus the label horizon has passed (with
   ``qualification.settle = "label"``, an explicitly arrived label settles at once).
   Before the horizon a recent span holds only the labels that came early (clicks
   arrive within seconds, non-clicks at the horizon), a biased sample;
3. the *recent* window, by event time: the newest ``window_examples`` within
   ``window_seconds`` of the newest one. The metric and calibration are read on the
   recent settled rows; the label-free checks (finite, not constant, mean, latency) on
   the recent rows whether settled or not.

>>> from datetime import UTC, datetime, timedelta
>>> from loopline.spec import DEFAULT_SPEC, load_spec
>>> spec = load_spec(DEFAULT_SPEC)  # label horizon 60 s
>>> now = datetime(2026, 1, 1, 12, tzinfo=UTC)
>>> row = lambda i, age: Example(f"e{i}", "u", now - timedelta(seconds=age), {}, 0.0)
>>> recent = select(spec, [row(1, 7200), row(2, 120), row(3, 10)], now)
>>> [r.event_id for r in recent.rows], [r.event_id for r in recent.settled]
(['e2', 'e3'], ['e2'])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from loopline.contracts import Example
from loopline.spec import Spec
from loopline.windows import ExcludedWindows


@dataclass(frozen=True, slots=True)
class RecentHoldout:
    """What qualification reads: recent rows, and those of them whose labels settled."""

    rows: tuple[Example, ...]
    settled: tuple[Example, ...]
    anomalous: int = 0

    def figures(self) -> dict[str, float | None]:
        return {
            "holdout": float(len(self.settled)),
            "holdout_recent": float(len(self.rows)),
            "holdout_anomalous": float(self.anomalous),
        }


def is_settled(spec: Spec, example: Example, now: datetime) -> bool:
    """Whether ``example``'s label is final and came no sooner for being what it is."""
    if spec.qualification.settle == "label" and example.label_observed:
        return True
    return example.ts + timedelta(seconds=spec.label.horizon_seconds) <= now


def newest(spec: Spec, rows: Iterable[Example]) -> tuple[Example, ...]:
    """The newest ``window_examples`` rows within ``window_seconds`` of the newest, oldest
    first."""
    q = spec.qualification
    ordered = sorted(rows, key=lambda r: r.ts)
    if not ordered:
        return ()
    start = ordered[-1].ts - timedelta(seconds=q.window_seconds)
    kept = [r for r in ordered[-q.window_examples :] if r.ts >= start]
    return tuple(kept)


def select(
    spec: Spec,
    holdout: Iterable[Example],
    now: datetime,
    excluded: ExcludedWindows | None = None,
) -> RecentHoldout:
    """The recent holdout of ``holdout`` at ``now``, leaving out ``excluded`` windows."""
    clean, anomalous = [], 0
    for row in holdout:
        if excluded and row.ts in excluded:
            anomalous += 1
        else:
            clean.append(row)
    settled = newest(spec, (r for r in clean if is_settled(spec, r, now)))
    return RecentHoldout(newest(spec, clean), settled, anomalous)
