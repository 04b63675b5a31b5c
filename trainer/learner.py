"""Test-then-train on one example: exclude, hold out, predict, score, learn.

Pure logic, no Kafka: the trainer, replays and tests drive it the same way. The
learner also owns the ids of the events it handled recently (:mod:`trainer.recent`),
so that a restored learner drops exactly the duplicates its original would have.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from loopline.contracts import Features
from loopline.errors import Reason, RecordError
from loopline.holdout import Holdout
from loopline.spec import Spec
from loopline.windows import ExcludedWindows
from trainer.metrics import ProgressiveMetrics
from trainer.recent import RecentEvents


@dataclass
class Counts:
    """What happened to every example consumed, so the stream reconciles.

    ``duplicates`` are records at new offsets whose event id was already handled; a
    record redelivered at an offset already handled is no new record and not counted.
    """

    learned: int = 0
    holdout: int = 0
    excluded: int = 0
    invalid: int = 0
    duplicates: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def dedup_horizon(spec: Spec) -> float:
    """Seconds of event time to remember event ids for: any valid duplicate is newer.

    Streams accept an event no older than ``max_age_seconds`` and no further ahead
    than ``max_future_seconds``, so a duplicate of a valid event cannot be further
    behind the newest one than their sum.
    """
    return spec.validation.max_age_seconds + spec.validation.max_future_seconds


class Learner:
    """A model with its progressive metrics, counters and event-time range."""

    def __init__(
        self,
        spec: Spec,
        model: Any,
        windows: ExcludedWindows,
        metrics: ProgressiveMetrics | None = None,
        counts: Counts | None = None,
        event_time: tuple[datetime | None, datetime | None] = (None, None),
        recent: RecentEvents | None = None,
        *,
        holdout_key: bytes,
    ) -> None:
        self.spec = spec
        self.model = model
        self.windows = windows
        self.metrics = metrics or ProgressiveMetrics(
            spec.training.metrics, spec.training.metric_window_seconds
        )
        self.counts = counts or Counts()
        self.recent = recent or RecentEvents(dedup_horizon(spec))
        self.event_time_min, self.event_time_max = event_time
        self._binary = spec.label.kind == "binary"
        self._holdout = Holdout(spec.training.holdout_fraction, holdout_key)

    def observe(self, event_id: str, ts: datetime, features: Features, label: float) -> None:
        """Handle one example; raise RecordError if its label does not fit the spec."""
        counts = self.counts
        if self.windows and ts in self.windows:
            counts.excluded += 1
            return
        if self._binary:
            if label != 0.0 and label != 1.0:
                raise RecordError(Reason.OUT_OF_RANGE, f"binary label {label!r} is not 0 or 1")
            y: Any = label == 1.0
        else:
            y = label
        if None in features.values():
            features = {k: v for k, v in features.items() if v is not None}
        model = self.model
        if self._binary:
            p = model.predict_proba_one(features).get(True, 0.0)
        else:
            p = model.predict_one(features)
        if event_id in self._holdout:
            self.metrics.holdout.update(y, p)
            counts.holdout += 1
            return
        self.metrics.update(ts, y, p)
        model.learn_one(features, y)
        counts.learned += 1
        if self.event_time_min is None or ts < self.event_time_min:
            self.event_time_min = ts
        if self.event_time_max is None or ts > self.event_time_max:
            self.event_time_max = ts
