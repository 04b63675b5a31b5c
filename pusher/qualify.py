"""Qualification: may this checkpoint serve? Judged on the recent holdout against the champion.

Every check that fails adds a reason (``code: detail``); a checkpoint qualifies with
none. What is read where (:mod:`pusher.recent`): the label-free checks — feature schema
equal to serving's, finite scores, a sane score distribution (not constant, mean
within the spec's bounds), per-prediction latency within budget — on the recent
holdout; the spec's metric, no worse than the champion's beyond the tolerance, and
calibration (binary labels: mean score against the observed positive rate) on the
recent *settled* holdout, the same rows for both models.

Cold start: while nothing serves and fewer than ``min_holdout`` recent examples have
settled, a checkpoint that learned ``cold_start_examples`` examples is judged on its
progressive metric (the trainer's test-then-train score, which must be finite) and the
label-free checks on at least :data:`COLD_START_ROWS` recent holdout rows.
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
from pusher.calibration import calibration
from pusher.evaluation import metric, worse_by
from pusher.recent import RecentHoldout

#: Recent holdout rows the label-free checks need before a first model may serve.
COLD_START_ROWS = 20


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


def ready(spec: Spec, manifest: CheckpointManifest, holdout: RecentHoldout, first: bool) -> bool:
    """Whether the checkpoint can be judged now (else it waits for the holdout)."""
    q = spec.qualification
    if len(holdout.settled) >= q.min_holdout:
        return True
    return cold_start(spec, manifest, holdout, first)


def cold_start(
    spec: Spec, manifest: CheckpointManifest, holdout: RecentHoldout, first: bool
) -> bool:
    """Whether the cold-start rule judges this checkpoint (see the module's docstring)."""
    q = spec.qualification
    return (
        first
        and len(holdout.settled) < q.min_holdout
        and manifest.examples_seen >= q.cold_start_examples
        and len(holdout.rows) >= COLD_START_ROWS
    )


def qualify(
    spec: Spec,
    manifest: CheckpointManifest,
    model: Any,
    holdout: RecentHoldout,
    champion: Any | None,
    *,
    first: bool = False,
) -> Verdict:
    """Judge a verified checkpoint's model on ``holdout`` against ``champion`` (if any).

    ``first`` says nothing serves yet, so the cold-start rule may apply."""
    q = spec.qualification
    figures: dict[str, float | None] = holdout.figures()
    if manifest.schema_hash != spec.schema_hash:
        reason = (
            f"schema: feature schema {manifest.schema_hash} is not serving's {spec.schema_hash}"
        )
        return Verdict(False, (reason,), figures)
    if not holdout.rows:
        return Verdict(False, ("holdout: no recent holdout example to judge on",), figures)
    try:
        scores, latencies = _scores(model, holdout.rows, spec.label.kind)
    except Exception as exc:
        return Verdict(False, (f"error: the model raised {exc!r}",), figures)
    bad = sum(1 for s in scores if not math.isfinite(s))
    if bad:
        reason = f"non_finite: {bad} of {len(scores)} scores are NaN or infinite"
        return Verdict(False, (reason,), figures)
    reasons = _sanity(spec, scores, latencies, figures)
    if cold_start(spec, manifest, holdout, first):
        reasons += _progressive(spec, manifest, figures)
    elif len(holdout.settled) < q.min_holdout:
        reasons.append(
            f"holdout: {len(holdout.settled)} recent settled examples < min_holdout {q.min_holdout}"
        )
    else:
        reasons += _against_champion(spec, model, holdout.settled, champion, figures)
    return Verdict(not reasons, tuple(reasons), figures)


def _sanity(
    spec: Spec, scores: list[float], latencies: list[float], figures: dict[str, float | None]
) -> list[str]:
    """The label-free checks on the recent rows' scores."""
    q = spec.qualification
    reasons = []
    mean, std = statistics.fmean(scores), statistics.pstdev(scores)
    p99 = _p99(latencies)
    figures |= {"score_mean": mean, "score_std": std, "latency_p99_ms": p99}
    if std < q.min_score_std:
        reasons.append(f"constant: score std {std:.3g} < {q.min_score_std:g}")
    if not q.score_mean_min <= mean <= q.score_mean_max:
        reasons.append(
            f"mean: score mean {mean:.4g} outside [{q.score_mean_min:g}, {q.score_mean_max:g}]"
        )
    if p99 > q.max_latency_ms:
        reasons.append(f"latency: p99 {p99:.3g} ms per prediction > {q.max_latency_ms:g} ms")
    return reasons


def _progressive(
    spec: Spec, manifest: CheckpointManifest, figures: dict[str, float | None]
) -> list[str]:
    """The cold-start bar: the trainer's progressive metric exists and is finite."""
    name = spec.qualification.metric
    value = manifest.metrics.get(name)
    figures |= {"cold_start": 1.0, f"progressive_{name}": value}
    if value is None or not math.isfinite(value):
        return [f"progressive: the checkpoint carries no finite progressive {name} ({value})"]
    return []


def _against_champion(
    spec: Spec,
    model: Any,
    settled: Sequence[Example],
    champion: Any | None,
    figures: dict[str, float | None],
) -> list[str]:
    """The metric against the champion's, and calibration, on the settled rows."""
    q = spec.qualification
    reasons = []
    labels = [row.label for row in settled]
    try:
        scores, _ = _scores(model, settled, spec.label.kind)
    except Exception as exc:  # rows the label-free checks did not score
        return [f"error: the model raised {exc!r}"]
    bad = sum(1 for s in scores if not math.isfinite(s))
    if bad:
        return [f"non_finite: {bad} of {len(scores)} settled scores are NaN or infinite"]
    value = metric(q.metric, labels, scores)
    figures[q.metric] = value
    champion_scores = _champion_scores(spec, champion, settled)
    baseline = None
    if champion_scores is not None:
        baseline = metric(q.metric, labels, champion_scores)
        baseline = baseline if math.isfinite(baseline) else None
    figures["champion_" + q.metric] = baseline
    if baseline is not None:
        gap = worse_by(value, baseline, higher_is_better=q.higher_is_better)
        if gap > q.tolerance:
            reasons.append(
                f"metric: {q.metric} {value:.4g} is worse than the champion's {baseline:.4g} "
                f"by {gap:.4g} > tolerance {q.tolerance:g}"
            )
    if spec.label.kind == "binary":
        reasons += calibration(q.calibration_tolerance, labels, scores, champion_scores, figures)
    return reasons


def _champion_scores(
    spec: Spec, champion: Any | None, settled: Sequence[Example]
) -> list[float] | None:
    """The champion's scores on the same rows; None without one (a champion that
    cannot score sets no bar)."""
    if champion is None:
        return None
    try:
        scores, _ = _scores(champion, settled, spec.label.kind)
    except Exception:
        return None
    return scores if all(math.isfinite(s) for s in scores) else None
