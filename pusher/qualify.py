"""Qualification: may this checkpoint serve? Judged on the holdout slice against the champion.

Every check that fails adds a reason (``code: detail``); a checkpoint qualifies with
none. The checks: feature schema equal to serving's, finite scores, a sane score
distribution (not constant, mean within the spec's bounds), per-prediction latency
within budget, and the spec's metric no worse than the champion's beyond the tolerance.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loopline.contracts import CheckpointManifest, Example
from loopline.scoring import score
from loopline.spec import Spec
from pusher.evaluation import metric, worse_by


@dataclass(frozen=True, slots=True)
class Verdict:
    qualified: bool
    reasons: tuple[str, ...]
    figures: dict[str, float | None] = field(default_factory=dict)


def _scores(model: Any, rows: Sequence[Example], kind: Any) -> tuple[list[float], list[float]]:
    """Scores and per-prediction latencies in ms; a raising model raises."""
    scores, latencies = [], []
    for row in rows:
        started = time.perf_counter()
        scores.append(score(model, row.features, kind))
        latencies.append((time.perf_counter() - started) * 1000)
    return scores, latencies


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def qualify(
    spec: Spec,
    manifest: CheckpointManifest,
    model: Any,
    holdout: Sequence[Example],
    champion: Any | None,
) -> Verdict:
    """Judge a verified checkpoint's model on ``holdout`` against ``champion`` (if any)."""
    q = spec.qualification
    reasons: list[str] = []
    figures: dict[str, float | None] = {"holdout": float(len(holdout))}
    if manifest.schema_hash != spec.schema_hash:
        reasons.append(
            f"schema: feature schema {manifest.schema_hash} is not serving's {spec.schema_hash}"
        )
        return Verdict(False, tuple(reasons), figures)
    labels = [row.label for row in holdout]
    try:
        scores, latencies = _scores(model, holdout, spec.label.kind)
    except Exception as exc:
        return Verdict(False, (f"error: the model raised {exc!r}",), figures)
    bad = sum(1 for s in scores if not math.isfinite(s))
    if bad:
        reasons.append(f"non_finite: {bad} of {len(scores)} scores are NaN or infinite")
        return Verdict(False, tuple(reasons), figures)
    mean, std = statistics.fmean(scores), statistics.pstdev(scores)
    p99 = _p99(latencies)
    value = metric(q.metric, labels, scores)
    figures |= {"score_mean": mean, "score_std": std, "latency_p99_ms": p99, q.metric: value}
    if std < q.min_score_std:
        reasons.append(f"constant: score std {std:.3g} < {q.min_score_std:g}")
    if not q.score_mean_min <= mean <= q.score_mean_max:
        reasons.append(
            f"mean: score mean {mean:.4g} outside [{q.score_mean_min:g}, {q.score_mean_max:g}]"
        )
    if p99 > q.max_latency_ms:
        reasons.append(f"latency: p99 {p99:.3g} ms per prediction > {q.max_latency_ms:g} ms")
    baseline = _champion_metric(spec, champion, holdout, labels)
    figures["champion_" + q.metric] = baseline
    if baseline is not None:
        gap = worse_by(value, baseline, higher_is_better=q.higher_is_better)
        if gap > q.tolerance:
            reasons.append(
                f"metric: {q.metric} {value:.4g} is worse than the champion's {baseline:.4g} "
                f"by {gap:.4g} > tolerance {q.tolerance:g}"
            )
    return Verdict(not reasons, tuple(reasons), figures)


def _champion_metric(
    spec: Spec, champion: Any | None, holdout: Sequence[Example], labels: list[float]
) -> float | None:
    """The champion's metric on the same rows; None without one (a champion that
    cannot score sets no bar)."""
    if champion is None:
        return None
    try:
        scores, _ = _scores(champion, holdout, spec.label.kind)
        value = metric(spec.qualification.metric, labels, scores)
    except Exception:
        return None
    return value if math.isfinite(value) else None
