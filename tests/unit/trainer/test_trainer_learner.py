from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from loopline.contracts import Window
from loopline.errors import RecordError
from loopline.holdout import DEVELOPMENT_KEY, Holdout
from loopline.spec import DEFAULT_SPEC, load_spec
from loopline.windows import ExcludedWindows
from tests.unit.trainer.trainer_data import T0, make_examples
from trainer.learner import Learner

YARN = load_spec(DEFAULT_SPEC)
DELIVERY = load_spec(Path(__file__).parents[2] / "specs" / "delivery_eta.toml")


def test_holdout_is_scored_but_never_learned() -> None:
    examples = make_examples(YARN, 400)
    learner = Learner(YARN, YARN.build_model(), ExcludedWindows(), holdout_key=DEVELOPMENT_KEY)
    reference = YARN.build_model()
    for ex in examples:
        learner.observe(ex.event_id, ex.ts, ex.features, ex.label)
        if ex.event_id not in Holdout(YARN.training.holdout_fraction, DEVELOPMENT_KEY):
            reference.learn_one(ex.features, ex.label == 1.0)
    holdout = sum(ex.event_id in Holdout(0.1, DEVELOPMENT_KEY) for ex in examples)
    assert 0 < holdout < 100
    assert learner.counts.holdout == holdout
    assert learner.counts.learned == 400 - holdout
    assert learner.metrics.holdout.metrics[0].value() is not None
    probe = make_examples(YARN, 20, seed=4)
    assert [learner.model.predict_proba_one(ex.features) for ex in probe] == [
        reference.predict_proba_one(ex.features) for ex in probe
    ]


def test_excluded_windows_are_counted_not_scored() -> None:
    windows = ExcludedWindows([Window(T0, T0 + timedelta(minutes=100))])
    learner = Learner(YARN, YARN.build_model(), windows, holdout_key=DEVELOPMENT_KEY)
    for ex in make_examples(YARN, 300):
        learner.observe(ex.event_id, ex.ts, ex.features, ex.label)
    assert learner.counts.excluded == 100
    assert learner.counts.learned + learner.counts.holdout == 200
    assert learner.event_time_min is not None and learner.event_time_min >= T0 + timedelta(
        minutes=100
    )


def test_a_binary_label_must_be_zero_or_one() -> None:
    learner = Learner(YARN, YARN.build_model(), ExcludedWindows(), holdout_key=DEVELOPMENT_KEY)
    ex = make_examples(YARN, 1)[0]
    with pytest.raises(RecordError, match="not 0 or 1"):
        learner.observe(ex.event_id, ex.ts, ex.features, 0.5)
    assert learner.counts.learned == 0


def test_null_features_are_left_out_and_inputs_untouched() -> None:
    learner = Learner(YARN, YARN.build_model(), ExcludedWindows(), holdout_key=DEVELOPMENT_KEY)
    ex = make_examples(YARN, 1)[0]
    features = {**ex.features, "price": None}
    before = dict(features)
    learner.observe("x1", ex.ts, features, 1.0)
    assert features == before


def test_regression_learns_and_scores() -> None:
    learner = Learner(
        DELIVERY, DELIVERY.build_model(), ExcludedWindows(), holdout_key=DEVELOPMENT_KEY
    )
    for ex in make_examples(DELIVERY, 200):
        learner.observe(ex.event_id, ex.ts, ex.features, ex.label)
    values = learner.metrics.values()
    assert values["mae"] is not None and values["rmse"] is not None
    assert values["rmse"] >= values["mae"]
