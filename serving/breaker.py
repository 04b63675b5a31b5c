"""Stops asking a model that keeps exceeding its latency budget.

Refusing one slow answer after it was computed saves no time, so a single slow
prediction still answers. After ``trips_after`` slow predictions in a row the version
is skipped (fallback answers, reason ``latency_budget``) for ``cool_down`` seconds,
then tried again.

>>> breaker = LatencyBreaker(budget=0.005, trips_after=2)
>>> breaker.record("v1", 0.010); breaker.record("v1", 0.010); breaker.is_open("v1")
True
"""

from __future__ import annotations

import time


class LatencyBreaker:
    def __init__(self, budget: float, trips_after: int = 3, cool_down: float = 5.0) -> None:
        self.budget = budget
        self._trips_after = trips_after
        self._cool_down = cool_down
        self._slow: dict[str, int] = {}
        self._open_until: dict[str, float] = {}

    def is_open(self, version: str) -> bool:
        until = self._open_until.get(version)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        self._open_until.pop(version, None)  # requests run in threads: may race
        return False

    def record(self, version: str, seconds: float) -> None:
        if seconds <= self.budget:
            self._slow.pop(version, None)
            return
        slow = self._slow.get(version, 0) + 1
        self._slow[version] = slow
        if slow >= self._trips_after:
            self._slow[version] = 0
            self._open_until[version] = time.monotonic() + self._cool_down
