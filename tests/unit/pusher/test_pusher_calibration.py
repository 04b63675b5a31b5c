"""Calibration and the cold-start rule as qualification checks."""

from __future__ import annotations

import random
import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loopline.contracts import Example
from loopline.spec import DEFAULT_SPEC, Spec, load_spec, parse_spec
from pusher.calibration import calibration_gap
from pusher.qualify import COLD_START_ROWS, qualify, ready
from pusher.recent import RecentHoldout, select
from tests.unit.pusher.pusher_support import ConstantModel, examples, manifest

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(DEFAULT_SPEC)


class RandomModel:
    """Scores spread around ``mean`` (so not constant), whatever the features."""

    def __init__(self, mean: float, seed: int = 0) -> None:
        self.mean = mean
        self.rng = random.Random(seed)

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        p = min(max(self.mean + self.rng.uniform(-0.02, 0.02), 0.001), 0.999)
        return {False: 1 - p, True: p}


def rated(n: int, rate: float, seed: int = 1) -> list[Example]:
    """``n`` settled rows whose labels are positive at ``rate``."""
    rng = random.Random(seed)
    ts = NOW - timedelta(hours=1)
    return [
        Example(f"c{seed}-{i}", "u", ts, {"price": 1.0}, float(rng.random() < rate))
        for i in range(n)
    ]


def codes(reasons: tuple[str, ...]) -> set[str]:
    return {r.split(":")[0] for r in reasons}


def test_the_calibration_gap() -> None:
    assert calibration_gap([1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]) == 0.0
    assert calibration_gap([1.0, 0.0], [0.9, 0.9]) == pytest.approx(0.4)


def test_a_calibrated_model_passes_and_an_overconfident_one_is_refused(spec: Spec) -> None:
    rows = select(spec, rated(500, 0.06), NOW)
    rate = sum(r.label for r in rows.settled) / len(rows.settled)
    calibrated = qualify(spec, manifest(spec, "ok"), RandomModel(rate), rows, None)
    assert "calibration" not in codes(calibrated.reasons), calibrated.reasons
    # The demo's failure: p(click) 0.59 served in a shop whose click rate is 6%.
    clicks_first = qualify(spec, manifest(spec, "bias"), RandomModel(0.59), rows, None)
    assert codes(clicks_first.reasons) == {"calibration"}
    assert clicks_first.figures["calibration_gap"] == pytest.approx(0.59 - rate, abs=0.01)


def test_chance_widens_the_tolerance_on_few_rows(spec: Spec) -> None:
    # 0.05 off on 200 rows at 50% is within three standard errors (0.106): not refused.
    rows = select(spec, rated(200, 0.5, seed=4), NOW)
    rate = sum(r.label for r in rows.settled) / len(rows.settled)
    off = qualify(spec, manifest(spec, "off"), RandomModel(rate + 0.05), rows, None)
    assert "calibration" not in codes(off.reasons)
    assert off.figures["calibration_allowed"] == pytest.approx(0.02 + 3 * 0.5 / 200**0.5, 0.01)


def test_a_challenger_better_calibrated_than_the_champion_is_not_refused_for_it(
    spec: Spec,
) -> None:
    rows = select(spec, rated(500, 0.06), NOW)
    verdict = qualify(
        spec, manifest(spec, "b"), RandomModel(0.2), rows, champion=RandomModel(0.35, seed=1)
    )
    assert "calibration" not in codes(verdict.reasons), verdict.reasons
    assert verdict.figures["champion_calibration_gap"] is not None


def test_regression_specs_have_no_calibration_check() -> None:
    data = tomllib.loads((Path(__file__).parents[2] / "specs" / "delivery_eta.toml").read_text())
    spec = parse_spec(data)
    rows = select(spec, rated(300, 0.5), NOW)

    class Far:
        def predict_one(self, x: dict[str, Any]) -> float:
            return 30.0 + random.random()

    verdict = qualify(spec, manifest(spec, "eta"), Far(), rows, None)
    assert "calibration_gap" not in verdict.figures


def test_a_first_model_serves_on_its_progressive_metric_before_the_holdout_settles(
    spec: Spec,
) -> None:
    fresh = [
        Example(r.event_id, r.entity_id, NOW, r.features, r.label)  # none has settled
        for r in examples(COLD_START_ROWS, seed=7, holdout=0.1)
    ]
    recent = select(spec, fresh, NOW)
    assert not recent.settled and len(recent.rows) == COLD_START_ROWS
    learned = manifest(spec, "first", examples_seen=spec.qualification.cold_start_examples)
    learned = replace(learned, metrics={"log_loss": 0.41})
    model = RandomModel(0.1)
    assert ready(spec, learned, recent, first=True)
    verdict = qualify(spec, learned, model, recent, None, first=True)
    assert verdict.qualified, verdict.reasons
    assert verdict.figures["cold_start"] == 1.0
    assert verdict.figures["progressive_log_loss"] == 0.41
    # Not before it learned enough, not with too few rows, not once something serves.
    young = manifest(spec, "young", examples_seen=spec.qualification.cold_start_examples - 1)
    assert not ready(spec, young, recent, first=True)
    assert not ready(spec, learned, select(spec, fresh[:-1], NOW), first=True)
    assert not ready(spec, learned, recent, first=False)
    # Without a progressive metric, or with a broken score distribution, no first model.
    blank = manifest(spec, "blank", examples_seen=1000)
    assert codes(qualify(spec, blank, model, recent, None, first=True).reasons) == {"progressive"}
    flat = qualify(spec, learned, ConstantModel(0.1), recent, None, first=True)
    assert codes(flat.reasons) == {"constant"}


def test_an_empty_recent_holdout_refuses(spec: Spec) -> None:
    verdict = qualify(spec, manifest(spec, "e"), RandomModel(0.1), RecentHoldout((), ()), None)
    assert codes(verdict.reasons) == {"holdout"}
