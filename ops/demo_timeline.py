"""What the demo saw, over time: the data its plot is drawn from.

Plain records, no I/O: :mod:`ops.demo_watch` fills a :class:`Timeline` while the demo
runs and :mod:`ops.demo_plot` draws one. Times are wall-clock, timezone-aware.

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> spans = paused_spans([(t0, "pause"), (t0 + timedelta(seconds=5), "resume")], t0)
>>> [(s.start - t0).seconds for s in spans], [(s.end - t0).seconds for s in spans]
([0], [5])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class CheckpointPoint:
    """One checkpoint's metrics, as its manifest states them."""

    at: datetime
    version: int
    checkpoint_id: str
    examples: int
    progressive: float | None  # test-then-train metric over everything learned
    holdout: float | None  # the same metric on the never-learned holdout slice


@dataclass(frozen=True, slots=True)
class ShareSample:
    """Share of entities routed to each model version (percent), at one moment."""

    at: datetime
    shares: dict[str, float]


@dataclass(frozen=True, slots=True)
class TrafficSample:
    """Events per second published in the second before ``at``."""

    at: datetime
    shoppers: float
    bots: float


@dataclass(frozen=True, slots=True)
class Span:
    start: datetime
    end: datetime
    label: str = ""


@dataclass(frozen=True, slots=True)
class Mark:
    """A moment worth a line on the plot: a deploy, a ramp stage, a rollback."""

    at: datetime
    label: str


@dataclass
class Timeline:
    started: datetime
    metric: str = "log_loss"
    checkpoints: list[CheckpointPoint] = field(default_factory=list)
    shares: list[ShareSample] = field(default_factory=list)
    traffic: list[TrafficSample] = field(default_factory=list)
    paused: list[Span] = field(default_factory=list)
    anomalous: list[Span] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    ended: datetime | None = None

    def seconds(self, at: datetime) -> float:
        """Seconds since the demo started: the plot's x axis."""
        return (at - self.started).total_seconds()

    def versions(self) -> list[str]:
        """Every version label seen in checkpoints or routes, in order of appearance."""
        seen: dict[str, None] = {}
        for point in self.checkpoints:
            seen.setdefault(f"v{point.version}")
        for sample in self.shares:
            for name in sample.shares:
                seen.setdefault(name)
        return sorted(seen, key=_version_order)


def _version_order(name: str) -> tuple[int, str]:
    digits = name.removeprefix("v")
    return (int(digits), name) if digits.isdigit() else (10**6, name)


def paused_spans(changes: Iterable[tuple[datetime, str]], end: datetime) -> list[Span]:
    """Spans between each ``pause`` and the next ``resume`` (an open one ends at ``end``).

    ``changes`` are ``(at, "pause" | "resume")`` in the order they were issued; a pause
    while paused or a resume while running changes nothing, as in the trainer.
    """
    spans: list[Span] = []
    opened: datetime | None = None
    for at, change in changes:
        if change == "pause" and opened is None:
            opened = at
        elif change == "resume" and opened is not None:
            spans.append(Span(opened, at, "paused"))
            opened = None
    if opened is not None:
        spans.append(Span(opened, max(end, opened), "paused"))
    return spans
