"""Online metrics per model version: ``predictions`` joined with ``labels`` by event id.

Stats are kept per role, ``candidate`` and ``baseline``: only predictions made since
the ramp started count, so both are compared over the same period, and a fresher
checkpoint of either lineage swapped in mid-ramp adds to its role's evidence. A label may arrive before or after
its prediction; a prediction left unlabelled past the spec's horizon takes the spec's
default label (``on_missing = "default"``) or is dropped. Memory is bounded.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from loopline.contracts import Label, Prediction, utcnow
from loopline.spec import Spec
from pusher.evaluation import metric

_MAX_OPEN = 200_000
CANDIDATE, BASELINE = "candidate", "baseline"
_MAX_JOINED = 20_000


@dataclass
class VersionStats:
    """What one version did since the ramp started."""

    predictions: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_MAX_JOINED))
    labels: deque[float] = field(default_factory=lambda: deque(maxlen=_MAX_JOINED))
    scores: deque[float] = field(default_factory=lambda: deque(maxlen=_MAX_JOINED))

    @property
    def error_rate(self) -> float:
        return self.errors / self.predictions if self.predictions else 0.0

    @property
    def latency_p99_ms(self) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    def metric(self, name: str) -> float | None:
        return metric(name, list(self.labels), list(self.scores)) if self.labels else None


class OnlineMetrics:
    def __init__(self, spec: Spec) -> None:
        self._horizon = timedelta(seconds=spec.label.horizon_seconds)
        self._default = spec.label.default if spec.label.on_missing == "default" else None
        self._since: datetime | None = None
        self._roles: dict[str, str] = {}
        self._open: OrderedDict[str, Prediction] = OrderedDict()
        self._early_labels: OrderedDict[str, float] = OrderedDict()
        self.stats: dict[str, VersionStats] = {}

    def watch(self, candidate: str, baseline: str, since: datetime) -> None:
        """Count these versions' predictions made from ``since``; a new ``since`` resets."""
        if since != self._since:
            self._since = since
            self._roles = {}
            self.stats = {CANDIDATE: VersionStats(), BASELINE: VersionStats()}
            self._open.clear()
        self._roles[candidate] = CANDIDATE
        self._roles[baseline] = BASELINE

    def _stats(self, version: str) -> VersionStats | None:
        role = self._roles.get(version)
        return None if role is None else self.stats[role]

    def prediction(self, p: Prediction) -> None:
        stats = self._stats(p.model_version)
        if stats is None or self._since is None or p.ts < self._since:
            return
        stats.predictions += 1
        stats.latencies.append(p.latency_ms)
        if p.fallback:
            stats.errors += 1
            return
        label = self._early_labels.pop(p.event_id, None)
        if label is not None:
            self._join(stats, label, p.score)
            return
        self._open[p.event_id] = p
        if len(self._open) > _MAX_OPEN:
            self._open.popitem(last=False)

    def label(self, label: Label) -> None:
        p = self._open.pop(label.event_id, None)
        if p is None:
            self._early_labels[label.event_id] = label.label
            if len(self._early_labels) > _MAX_OPEN:
                self._early_labels.popitem(last=False)
            return
        stats = self._stats(p.model_version)
        if stats is not None:
            self._join(stats, label.label, p.score)

    def expire(self, now: datetime | None = None) -> None:
        """Predictions unlabelled past the horizon take the default label, or are dropped."""
        cutoff = (now or utcnow()) - self._horizon
        while self._open:
            event_id, p = next(iter(self._open.items()))
            if p.ts >= cutoff:
                break
            del self._open[event_id]
            stats = self._stats(p.model_version)
            if self._default is not None and stats is not None:
                self._join(stats, self._default, p.score)

    @staticmethod
    def _join(stats: VersionStats, label: float, score: float) -> None:
        stats.labels.append(label)
        stats.scores.append(score)
