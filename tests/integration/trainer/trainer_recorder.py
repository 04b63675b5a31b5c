"""A model factory for tests: remembers which examples it learned, in order."""

from __future__ import annotations

from typing import Any

from river import base


class Recorder(base.Classifier):
    """Learns nothing but the identity of each example (its ``serial`` feature)."""

    def __init__(self) -> None:
        self.learned: list[str] = []

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        self.learned.append(f"e{x['serial']}")

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        return {False: 0.5, True: 0.5}


def recorder() -> Recorder:
    return Recorder()
