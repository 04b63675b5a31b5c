"""The contract every model factory a spec may name must keep, checked on each one:
every public factory in ``loopline.models`` and every factory a shipped spec names
(after River's ``checks.yield_checks``)."""

from __future__ import annotations

import copy
import inspect
import math
import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from river import base

from loopline import models
from loopline.contracts import Example
from loopline.spec import DEFAULT_SPEC, Spec, load_spec, resolve_callable
from tests.unit.trainer.trainer_data import make_examples

ROOT = Path(__file__).resolve().parents[3]
SPECS = [
    DEFAULT_SPEC,
    *sorted((ROOT / "loopline" / "specs").glob("*.toml")),
    *sorted((ROOT / "tests" / "specs").glob("*.toml")),
]
YARN = load_spec(DEFAULT_SPEC)
DELIVERY = load_spec(ROOT / "tests" / "specs" / "delivery_eta.toml")


def _factories() -> dict[str, tuple[Callable[..., Any], dict[str, Any]]]:
    found: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}
    for name, fn in inspect.getmembers(models, inspect.isfunction):
        if fn.__module__ == models.__name__ and not name.startswith("_"):
            found[f"loopline.models:{name}"] = (fn, {})
    for path in dict.fromkeys(SPECS):
        spec = load_spec(path)
        found[f"{spec.model.factory} ({path.name})"] = (
            resolve_callable(spec.model.factory),
            dict(spec.model.params),
        )
    return found


FACTORIES = _factories()


def build(key: str) -> Any:
    factory, params = FACTORIES[key]
    if "seed" in inspect.signature(factory).parameters:
        params = {**params, "seed": 42}
    return factory(**params)


def data_for(model: Any, n: int = 150, seed: int = 0) -> tuple[Spec, list[Example]]:
    spec = YARN if isinstance(model, base.Classifier) else DELIVERY
    return spec, make_examples(spec, n, seed=seed)


def target(model: Any, ex: Example) -> Any:
    return ex.label == 1.0 if isinstance(model, base.Classifier) else ex.label


def predict(model: Any, x: dict[str, Any]) -> Any:
    if isinstance(model, base.Classifier):
        proba = model.predict_proba_one(x)
        p_true = proba.get(True, 0.0)
        assert math.isfinite(p_true) and 0.0 <= p_true <= 1.0
        return proba
    y = model.predict_one(x)
    assert y is not None and math.isfinite(y)
    return y


def test_every_factory_is_covered() -> None:
    assert {"loopline.models:logistic_regression", "loopline.models:linear_regression"} <= set(
        FACTORIES
    )
    assert any(key.endswith("(delivery_eta.toml)") for key in FACTORIES)


@pytest.mark.parametrize("key", FACTORIES)
def test_predicts_before_learning(key: str) -> None:
    model = build(key)
    _, examples = data_for(model, 5)
    for ex in examples:
        predict(model, ex.features)


@pytest.mark.parametrize("key", FACTORIES)
def test_pickle_round_trip_keeps_predictions_and_learning(key: str) -> None:
    model = build(key)
    _, examples = data_for(model)
    for ex in examples[:100]:
        model.learn_one(ex.features, target(model, ex))
    clone = pickle.loads(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    for ex in examples[100:]:
        assert predict(clone, ex.features) == predict(model, ex.features)
        clone.learn_one(ex.features, target(model, ex))
        model.learn_one(ex.features, target(model, ex))


@pytest.mark.parametrize("key", FACTORIES)
def test_inputs_are_not_mutated(key: str) -> None:
    model = build(key)
    _, examples = data_for(model)
    for ex in examples:
        x, y = dict(ex.features), target(model, ex)
        before_x, before_y = copy.deepcopy(x), copy.deepcopy(y)
        predict(model, x)
        model.learn_one(x, y)
        assert x == before_x
        assert y == before_y


@pytest.mark.parametrize("key", FACTORIES)
def test_features_appearing_and_disappearing(key: str) -> None:
    model = build(key)
    _, examples = data_for(model)
    rng = random.Random(0)
    for i, ex in enumerate(examples):
        names = list(ex.features)
        rng.shuffle(names)
        partial = {n: ex.features[n] for n in names[:-3]}
        if i % 2:
            predict(model, {**ex.features, "brand_new": 1.5, "new_category": "z"})
            model.learn_one(partial, target(model, ex))
        else:
            predict(model, partial)
            model.learn_one({**ex.features, "brand_new": 2.5}, target(model, ex))
    for ex in examples[:20]:
        only = rng.choice(list(ex.features))
        predict(model, {only: ex.features[only]})
        model.learn_one({only: ex.features[only]}, target(model, ex))


@pytest.mark.parametrize("key", FACTORIES)
def test_same_seed_same_result(key: str) -> None:
    first, second = build(key), build(key)
    _, examples = data_for(first, seed=3)
    for ex in examples:
        assert predict(first, ex.features) == predict(second, ex.features)
        first.learn_one(ex.features, target(first, ex))
        second.learn_one(ex.features, target(second, ex))
