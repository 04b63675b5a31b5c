"""The fault suite's poison is poison: no wire type accepts any of its values."""

from __future__ import annotations

import random

import pytest

from loopline.contracts import Command, Event, Example, Label, Prediction
from loopline.errors import RecordError
from tests.faults.poison import poison_values

TYPES = (Event, Label, Example, Prediction, Command)


@pytest.mark.parametrize("seed", [7, 8])
def test_every_value_is_refused_by_every_type(seed: int) -> None:
    values = poison_values(random.Random(seed), 3000)
    assert len(values) == 3000
    for raw in values:
        for kind in TYPES:
            with pytest.raises(RecordError):
                kind.from_json(raw)


def test_near_misses_are_not_all_refused_for_the_same_reason() -> None:
    reasons = set()
    for raw in poison_values(random.Random(3), 2000):
        try:
            Event.from_json(raw)
        except RecordError as exc:
            reasons.add(exc.reason)
    assert len(reasons) >= 5, reasons
