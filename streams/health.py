"""The data-health monitor: each window of traffic compared with a trailing baseline.

Per window (``health.window_seconds`` of processing time) it tracks event volume, the
reject rate by reason, the missing (imputed) rate per optional feature, the label rate
and each numeric feature's mean and spread. A window that moves too far from the mean
of the last ``health.baseline_windows`` healthy windows is a breach; the first breach
of an incident yields the evidence for an auto-pause, and the breached window is kept
out of the baseline. Thresholds come from the spec's ``[health]`` section.

The label rate is judged only on windows that start one label horizon after the
monitor: before that, examples are the labels that came early (clicks, say), not yet
the defaults the horizon brings, and the rate would look wrong for a healthy stream.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loopline.contracts import Features
from loopline.spec import Spec


@dataclass
class Window:
    start: float
    events: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    missing: Counter[str] = field(default_factory=Counter)
    examples: int = 0
    labelled: int = 0
    sums: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    squares: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def total(self) -> int:
        return self.events + sum(self.rejects.values())

    def reject_rate(self) -> float:
        return sum(self.rejects.values()) / self.total if self.total else 0.0

    def label_rate(self) -> float | None:
        return self.labelled / self.examples if self.examples else None

    def mean(self, name: str) -> float | None:
        return self.sums[name] / self.events if self.events else None

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "rejected": dict(self.rejects),
            "missing_rate": {k: v / self.events for k, v in self.missing.items()}
            if self.events
            else {},
            "label_rate": self.label_rate(),
            "means": {k: self.mean(k) for k in self.sums},
        }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


class HealthMonitor:
    """Feeds on processed records; :meth:`tick` returns evidence when a window breaches."""

    def __init__(self, spec: Spec, now: float) -> None:
        self.health = spec.health
        self._numeric = tuple(n for n, f in spec.features.items() if f.type in ("float", "int"))
        self._optional = tuple(n for n, f in spec.features.items() if not f.required)
        self.window = Window(now)
        self.baseline: deque[Window] = deque(maxlen=self.health.baseline_windows)
        self.in_breach = False
        self.last: dict[str, Any] = {}
        self.labels_settled_at = now + spec.label.horizon_seconds

    def observe_event(self, features: Features, imputed: tuple[str, ...]) -> None:
        w = self.window
        w.events += 1
        for name in imputed:
            w.missing[name] += 1
        for name in self._numeric:
            value = features.get(name)
            if isinstance(value, int | float):
                w.sums[name] += value
                w.squares[name] += value * value

    def observe_reject(self, reason: str) -> None:
        self.window.rejects[reason] += 1

    def observe_example(self, observed: bool) -> None:
        self.window.examples += 1
        self.window.labelled += observed

    def tick(self, now: float) -> dict[str, Any] | None:
        """Close the window if its time is up; the evidence of a new breach, else None."""
        if now - self.window.start < self.health.window_seconds:
            return None
        closed, self.window = self.window, Window(now)
        breaches = self.check(closed)
        self.last = {"window": closed.summary(), "breaches": breaches}
        if breaches:
            new_incident = not self.in_breach
            self.in_breach = True
            if not new_incident:
                return None
            return {
                "window": {"start": _iso(closed.start), "end": _iso(now)},
                "breaches": breaches,
                "observed": closed.summary(),
                "baseline_windows": len(self.baseline),
            }
        self.in_breach = False
        if closed.total:
            self.baseline.append(closed)
        return None

    def verdict(self) -> str:
        """``breach`` while an incident lasts, ``warming up`` until the baseline is full."""
        if self.in_breach:
            return "breach"
        if len(self.baseline) < self.health.baseline_windows:
            return "warming up"
        return "healthy"

    def check(self, w: Window) -> list[dict[str, Any]]:
        h = self.health
        if w.total < h.min_events:
            return []
        found: list[dict[str, Any]] = []
        if w.reject_rate() > h.max_reject_rate:
            found.append(_breach("reject_rate", w.reject_rate(), None, h.max_reject_rate))
        if len(self.baseline) < h.baseline_windows:
            return found
        base = list(self.baseline)
        volume = sum(b.total for b in base) / len(base)
        if volume and w.total / volume > h.max_volume_ratio:
            found.append(_breach("volume_ratio", w.total / volume, volume, h.max_volume_ratio))
        base_events = sum(b.events for b in base)
        if w.events and base_events:
            for name in self._optional:
                missing = w.missing[name] / w.events
                base_missing = sum(b.missing[name] for b in base) / base_events
                if missing - base_missing > h.max_missing_rate_increase:
                    limit = h.max_missing_rate_increase
                    found.append(_breach("missing_rate", missing, base_missing, limit, name))
            for name in self._numeric:
                mean = w.sums[name] / w.events
                base_mean = sum(b.sums[name] for b in base) / base_events
                var = sum(b.squares[name] for b in base) / base_events - base_mean**2
                sigma = math.sqrt(max(var, 0.0))
                if sigma > 0 and abs(mean - base_mean) / sigma > h.max_mean_shift_sigmas:
                    shift = abs(mean - base_mean) / sigma
                    found.append(
                        _breach(
                            "mean_shift_sigmas", shift, base_mean, h.max_mean_shift_sigmas, name
                        )
                    )
        settled = self.labels_settled_at
        rates = [r for b in base if b.start >= settled and (r := b.label_rate()) is not None]
        rate = w.label_rate() if w.start >= settled else None
        if rates and rate is not None:
            base_rate = sum(rates) / len(rates)
            if base_rate > 0 and abs(rate - base_rate) / base_rate > h.max_label_rate_change:
                change = abs(rate - base_rate) / base_rate
                found.append(
                    _breach("label_rate_change", change, base_rate, h.max_label_rate_change)
                )
        return found


def _breach(
    check: str, value: float, baseline: float | None, limit: float, feature: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"check": check, "value": round(value, 6), "limit": limit}
    if baseline is not None:
        out["baseline"] = round(baseline, 6)
    if feature is not None:
        out["feature"] = feature
    return out
