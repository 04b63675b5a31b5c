from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from loopline.spec import DEFAULT_SPEC, Spec, load_spec
from pusher.evaluation import metric, worse_by
from pusher.qualify import qualify
from pusher.recent import select
from tests.unit.pusher.pusher_support import (
    ConstantModel,
    RaisingModel,
    SlowModel,
    examples,
    manifest,
    train,
)


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(DEFAULT_SPEC)


@pytest.fixture(scope="module")
def trained(spec: Spec) -> object:
    return train(spec, examples(2000, seed=2))


ROWS = examples(300, seed=3, holdout=0.1)
HOLDOUT = select(load_spec(DEFAULT_SPEC), ROWS, datetime.now(UTC))


def test_a_trained_model_qualifies_and_reports_its_figures(spec: Spec, trained: object) -> None:
    verdict = qualify(spec, manifest(spec, "a"), trained, HOLDOUT, champion=None)
    assert verdict.qualified, verdict.reasons
    assert verdict.figures["holdout"] == 300
    assert verdict.figures["log_loss"] is not None


def test_a_constant_model_is_refused_with_its_reasons(spec: Spec, trained: object) -> None:
    verdict = qualify(spec, manifest(spec, "c"), ConstantModel(0.9), HOLDOUT, champion=trained)
    assert not verdict.qualified
    codes = {r.split(":")[0] for r in verdict.reasons}
    assert codes == {"constant", "mean", "metric", "calibration"}


def test_nan_scores_and_raising_models_are_refused(spec: Spec) -> None:
    nan = qualify(spec, manifest(spec, "n"), ConstantModel(math.nan), HOLDOUT, None)
    assert nan.reasons[0].startswith("non_finite: 300 of 300")
    broken = qualify(spec, manifest(spec, "r"), RaisingModel(), HOLDOUT, None)
    assert broken.reasons[0].startswith("error: the model raised")


def test_a_foreign_schema_is_refused_before_scoring(spec: Spec, trained: object) -> None:
    verdict = qualify(spec, manifest(spec, "s", schema_hash="0123"), trained, HOLDOUT, None)
    assert verdict.reasons[0].startswith("schema: feature schema 0123")


def test_a_slow_model_is_refused_on_latency(spec: Spec, trained: object) -> None:
    verdict = qualify(
        spec,
        manifest(spec, "slow"),
        SlowModel(trained, 0.006),
        select(spec, ROWS[:20], datetime.now(UTC)),
        None,
    )
    # Too few rows to compare with a champion, too: the latency is judged all the same.
    assert [r.split(":")[0] for r in verdict.reasons] == ["latency", "holdout"]


def test_a_champion_that_cannot_score_sets_no_bar(spec: Spec, trained: object) -> None:
    verdict = qualify(spec, manifest(spec, "a"), trained, HOLDOUT, champion=RaisingModel())
    assert verdict.qualified
    assert verdict.figures["champion_log_loss"] is None


def test_metrics() -> None:
    assert metric("accuracy", [1.0, 0.0, 1.0], [0.9, 0.2, 0.1]) == pytest.approx(2 / 3)
    assert metric("roc_auc", [1.0, 0.0, 1.0, 0.0], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert metric("roc_auc", [1.0, 1.0], [0.2, 0.3]) == 0.5
    assert metric("mae", [1.0, 3.0], [2.0, 3.0]) == 0.5
    assert metric("rmse", [0.0, 0.0], [3.0, 4.0]) == pytest.approx(math.sqrt(12.5))
    assert worse_by(0.8, 0.9, higher_is_better=True) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown metric"):
        metric("f1", [1.0], [1.0])
