"""Model factories a spec may name (``model.factory = "loopline.models:..."``).

Each returns a fresh River pipeline that scales numbers, one-hot encodes strings and
tolerates features appearing or disappearing between examples. Users may name their
own factories instead: any ``module:callable`` returning a River estimator.
"""

from __future__ import annotations

import numbers
from typing import Any

from river import compose, linear_model, optim, preprocessing, tree


def _features() -> Any:
    numeric = compose.SelectType(numbers.Number) | preprocessing.StandardScaler()
    categorical = compose.SelectType(str) | preprocessing.OneHotEncoder()
    return numeric + categorical


def logistic_regression(lr: float = 0.05, l2: float = 0.0) -> Any:
    """Binary classifier: scaled numbers and one-hot categories into a logistic regression."""
    return _features() | linear_model.LogisticRegression(optimizer=optim.SGD(lr), l2=l2)


def linear_regression(lr: float = 0.01, l2: float = 0.0) -> Any:
    """Regressor: scaled numbers and one-hot categories into a linear regression."""
    return _features() | linear_model.LinearRegression(optimizer=optim.SGD(lr), l2=l2)


def hoeffding_tree(grace_period: int = 200, max_depth: int = 12) -> Any:
    """Binary classifier: a Hoeffding tree, which needs no scaling."""
    return tree.HoeffdingTreeClassifier(grace_period=grace_period, max_depth=max_depth)
