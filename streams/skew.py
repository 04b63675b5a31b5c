"""Where the entity features serving read differ from what the streams hold for an event.

A served event carries the values serving read from the online store; the streams
hold the values they last wrote there. Both are as of before the event, so they agree
unless serving read while the streams lagged (or wrote) or the definitions changed.
Each feature that differs is counted as ``skew.<feature>`` in the partition's counts.

A feature serving found nothing for (None) agrees with an entity the streams know
nothing of yet: both say the entity is new.

>>> skew({"views_1h": 2, "gap": 1.5}, {"views_1h": 3, "gap": 1.5}, known=True)
['views_1h']
>>> skew({"views_1h": 0, "gap": None}, {"views_1h": None, "gap": None}, known=False)
[]
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from loopline.contracts import FeatureValue

#: The prefix of the per-feature skew counts.
SKEW = "skew."
_REL_TOL = 1e-9


def same(computed: FeatureValue, logged: FeatureValue) -> bool:
    """Equal as features: numbers within float rounding, anything else exactly."""
    if computed is None or logged is None:
        return computed is logged
    if isinstance(computed, bool) or isinstance(logged, bool):
        return computed is logged
    if isinstance(computed, int | float) and isinstance(logged, int | float):
        return math.isclose(computed, logged, rel_tol=_REL_TOL, abs_tol=_REL_TOL)
    return computed == logged


def skew(
    computed: Mapping[str, FeatureValue], logged: Mapping[str, FeatureValue], *, known: bool
) -> list[str]:
    """The features whose logged value differs from the computed one, in spec order."""
    return [
        name
        for name, value in computed.items()
        if (known or logged.get(name) is not None) and not same(value, logged.get(name))
    ]
