"""Per-entity features computed from the stream, as the spec's ``entity.features`` declare.

Windows are kept as buckets of 1/12 of the window (event time), so an entity's state
stays small whatever its traffic. The values an entity holds are the ones last written
to the online store: an event's example carries the values as they were before the
event, which is what serving read for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loopline.contracts import FeatureValue
from loopline.spec import EntityFeature, Spec

BUCKETS_PER_WINDOW = 12
TICK = 1e-6


class EntityFeatureSpec:
    """The compiled ``entity.features`` of a spec."""

    def __init__(self, spec: Spec) -> None:
        self.features: dict[str, EntityFeature] = dict(spec.entity.features)
        self.names = tuple(self.features)
        # Past this much event time after its latest change, an entity's windows are all
        # empty: its state can go (a returning entity starts afresh, as a new one).
        self.keep_seconds = max(
            (float(f.window_seconds) for f in self.features.values() if f.window_seconds),
            default=0.0,
        )

    def new(self) -> EntityState:
        return EntityState(self, {})

    def load(self, data: dict[str, Any]) -> EntityState:
        return EntityState(self, data)


class EntityState:
    """One entity's feature state; ``data`` is JSON-ready and is what the table stores.

    ``data`` keys: ``t`` the event time of the latest change (epoch seconds, strictly
    increasing so the online store's event-time guard accepts every change), ``last``
    and ``gap`` for recency, and one bucket map per windowed feature.
    """

    def __init__(self, spec: EntityFeatureSpec, data: dict[str, Any]) -> None:
        self.spec = spec
        self.data = data

    @property
    def known(self) -> bool:
        """Whether anything was learned of this entity (a new one has no state)."""
        return bool(self.data)

    @property
    def as_of(self) -> datetime:
        return datetime.fromtimestamp(self.data.get("t", 0.0), UTC)

    def _advance(self, ts: float) -> None:
        self.data["t"] = max(ts, self.data.get("t", 0.0) + TICK)

    def on_event(self, ts: float) -> None:
        data = self.data
        last = data.get("last")
        if last is not None and ts >= last:
            data["gap"] = ts - last
        if last is None or ts > last:
            data["last"] = ts
        for name, f in self.spec.features.items():
            if f.kind == "count":
                _add(data.setdefault(name, {}), ts, f.window_seconds, 1.0, None)
        self._advance(ts)

    def on_label(self, ts: float, value: float) -> None:
        for name, f in self.spec.features.items():
            if f.kind == "label_rate":
                _add(self.data.setdefault(name, {}), ts, f.window_seconds, 1.0, value)
        self._advance(ts)

    def values(self) -> dict[str, FeatureValue]:
        """The feature values as of the latest change."""
        data = self.data
        now = data.get("t", 0.0)
        out: dict[str, FeatureValue] = {}
        for name, f in self.spec.features.items():
            if f.kind == "seconds_since_last":
                out[name] = data.get("gap")
            elif f.kind == "count":
                n, _ = _window(data.get(name, {}), now, f.window_seconds)
                out[name] = int(n)
            else:
                n, total = _window(data.get(name, {}), now, f.window_seconds)
                out[name] = total / n if n else None
        return out


def _bucket(ts: float, window: int) -> str:
    return str(int(ts // (window / BUCKETS_PER_WINDOW)))


def _add(
    buckets: dict[str, list[float]], ts: float, window: int, n: float, value: float | None
) -> None:
    cell = buckets.setdefault(_bucket(ts, window), [0.0, 0.0])
    cell[0] += n
    if value is not None:
        cell[1] += value
    oldest = int(_bucket(ts, window)) - BUCKETS_PER_WINDOW
    for key in [k for k in buckets if int(k) <= oldest]:
        del buckets[key]


def _window(buckets: dict[str, list[float]], now: float, window: int) -> tuple[float, float]:
    oldest = int(_bucket(now, window)) - BUCKETS_PER_WINDOW
    n = total = 0.0
    for key, (count, value) in buckets.items():
        if int(key) > oldest:
            n += count
            total += value
    return n, total
