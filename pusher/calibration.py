"""Calibration as a qualification check: does the mean score match the observed rate?

On the recent settled holdout of a binary spec, the gap ``|mean score - positive
rate|`` may exceed the spec's tolerance only by what chance allows a calibrated model:
``CALIBRATION_Z`` standard errors of the gap, ``sqrt(sum p(1-p)) / n`` from the
model's own scores. A model closer to the observed rate than the champion is never
refused for it: refusing would keep the worse-calibrated one serving.

>>> calibration(0.02, [1.0, 0.0, 0.0, 0.0], [0.25] * 4, None, {})
[]
>>> calibration(0.02, [0.0] * 400, [0.5] * 400, None, {})
['calibration: mean score is 0.5 away from the observed positive rate > 0.095 allowed (tolerance 0.02 + chance 0.075)']
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

#: Standard errors of the calibration gap a calibrated model may show by chance.
CALIBRATION_Z = 3.0


def calibration_gap(labels: Sequence[float], scores: Sequence[float]) -> float:
    """|mean score - observed positive rate|."""
    rate = sum(1 for y in labels if y >= 0.5) / len(labels)
    return abs(statistics.fmean(scores) - rate)


def calibration(
    tolerance: float,
    labels: Sequence[float],
    scores: Sequence[float],
    champion_scores: Sequence[float] | None,
    figures: dict[str, float | None],
) -> list[str]:
    """Refuse a checkpoint whose mean score misses the observed rate beyond ``tolerance``
    plus what chance allows a calibrated model (``CALIBRATION_Z`` standard errors of
    the gap, from its own scores), unless it misses by less than the champion does."""
    gap = calibration_gap(labels, scores)
    chance = CALIBRATION_Z * math.sqrt(sum(p * (1 - p) for p in scores)) / len(scores)
    allowed = tolerance + chance
    champion_gap = None if champion_scores is None else calibration_gap(labels, champion_scores)
    figures |= {"calibration_gap": gap, "calibration_allowed": allowed}
    figures["champion_calibration_gap"] = champion_gap
    if gap <= allowed or (champion_gap is not None and gap < champion_gap):
        return []
    return [
        f"calibration: mean score is {gap:.4g} away from the observed positive rate "
        f"> {allowed:.4g} allowed (tolerance {tolerance:g} + chance {chance:.3g})"
    ]
