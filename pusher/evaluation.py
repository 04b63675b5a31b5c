"""Metrics over (label, score) pairs, for qualification on holdout and for guardrails online.

Batch formulas over a window rather than progressive ones: both uses compare two
models on the same recent rows.

>>> round(metric("log_loss", [1.0, 0.0], [0.9, 0.1]), 4)
0.1054
>>> metric("roc_auc", [1.0, 0.0, 1.0], [0.8, 0.3, 0.6])
1.0
>>> worse_by(3.0, 2.5, higher_is_better=False)
0.5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

_EPS = 1e-15

Labels = Sequence[float]
Scores = Sequence[float]


def _log_loss(y: Labels, p: Scores) -> float:
    total = 0.0
    for label, score in zip(y, p, strict=True):
        q = min(max(score, _EPS), 1 - _EPS)
        total -= math.log(q) if label >= 0.5 else math.log(1 - q)
    return total / len(y)


def _accuracy(y: Labels, p: Scores) -> float:
    return sum((s >= 0.5) == (label >= 0.5) for label, s in zip(y, p, strict=True)) / len(y)


def _roc_auc(y: Labels, p: Scores) -> float:
    """Mann-Whitney U with average ranks for ties; 0.5 when one class is absent."""
    pairs = sorted(zip(p, y, strict=True))
    positives = sum(1 for label in y if label >= 0.5)
    negatives = len(y) - positives
    if not positives or not negatives:
        return 0.5
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        average = (i + j) / 2 + 1
        rank_sum += average * sum(1 for k in range(i, j + 1) if pairs[k][1] >= 0.5)
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _mae(y: Labels, p: Scores) -> float:
    return sum(abs(a - b) for a, b in zip(y, p, strict=True)) / len(y)


def _mse(y: Labels, p: Scores) -> float:
    return sum((a - b) ** 2 for a, b in zip(y, p, strict=True)) / len(y)


def _rmse(y: Labels, p: Scores) -> float:
    return math.sqrt(_mse(y, p))


METRICS: dict[str, tuple[Callable[[Labels, Scores], float], bool]] = {
    # name: (function, higher is better)
    "log_loss": (_log_loss, False),
    "accuracy": (_accuracy, True),
    "roc_auc": (_roc_auc, True),
    "mae": (_mae, False),
    "mse": (_mse, False),
    "rmse": (_rmse, False),
}


def metric(name: str, labels: Labels, scores: Scores) -> float:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    if not labels:
        raise ValueError(f"{name} needs at least one labelled row")
    return METRICS[name][0](labels, scores)


def higher_is_better(name: str) -> bool:
    return METRICS[name][1]


def worse_by(candidate: float, baseline: float, *, higher_is_better: bool) -> float:
    """How much worse the candidate is than the baseline (negative: better)."""
    return baseline - candidate if higher_is_better else candidate - baseline
