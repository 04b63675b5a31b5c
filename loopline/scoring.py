"""One number per prediction, whatever the estimator: what serving answers and the pusher judges.

A binary spec scores the probability of the positive class; a regression spec the
predicted value. Serving and the pusher must score identically, so both use this.

>>> from loopline.models import logistic_regression
>>> score(logistic_regression(), {"price": 3.0}, "binary")
0.5
"""

from __future__ import annotations

from typing import Any, Literal

from loopline.contracts import Features


def score(model: Any, features: Features, kind: Literal["binary", "regression"]) -> float:
    """The model's score for one row (None-valued features are left out)."""
    x = {k: v for k, v in features.items() if v is not None}
    if kind == "binary":
        proba = model.predict_proba_one(x)
        # River keys the positive class by True (1 and 1.0 hash the same).
        return float(proba.get(True, 0.0))
    return float(model.predict_one(x))
