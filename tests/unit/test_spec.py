from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from loopline.errors import SpecError
from loopline.spec import DEFAULT_SPEC, load_spec, parse_spec

OTHER_SPEC = Path(__file__).parents[1] / "specs" / "delivery_eta.toml"


def _data() -> dict[str, Any]:
    return tomllib.loads(DEFAULT_SPEC.read_text())


def test_shipped_spec_loads_and_builds_a_model() -> None:
    spec = load_spec(DEFAULT_SPEC)
    assert spec.label.kind == "binary"
    assert spec.label.default == 0
    model = spec.build_model()
    assert 0.0 <= model.predict_proba_one({"price": 10.0, "category": "wool"})[True] <= 1.0


def test_another_use_case_loads() -> None:
    spec = load_spec(OTHER_SPEC)
    assert spec.label.kind == "regression"
    assert spec.label.on_missing == "drop"
    assert spec.all_feature_names == (
        "distance_km",
        "weight_kg",
        "carrier",
        "express",
        "parcels_1h",
    )
    assert spec.schema_hash != load_spec(DEFAULT_SPEC).schema_hash


def _error(data: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "shop.toml")
    return info.value


def test_unknown_key_is_named() -> None:
    data = _data()
    data["features"]["price"]["maximum"] = 3
    err = _error(data)
    assert (err.path, err.key) == ("shop.toml", "features.price.maximum")
    assert "unknown key" in str(err)


def test_wrong_type_is_named_with_what_was_given() -> None:
    data = _data()
    data["label"]["horizon_seconds"] = "half an hour"
    err = _error(data)
    assert err.key == "label.horizon_seconds"
    assert "half an hour" in err.problem


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (lambda d: d["features"]["device"].pop("categories"), "features.device", "categories"),
        (lambda d: d["features"]["recent_views"].pop("impute"), "features.recent_views", "impute"),
        (
            lambda d: d["features"]["price"].update(min=10, max=1),
            "features.price",
            "greater than max",
        ),
        (lambda d: d["label"].pop("default"), "label", "default"),
        (lambda d: d["ramp"].update(stages=[5, 1, 100]), "ramp", "increasing"),
        (lambda d: d["ramp"].update(stages=[1, 50]), "ramp", "end at 100"),
        (lambda d: d["fallback"].update(feature="colour"), "<root>", "fallback.feature"),
        (
            lambda d: d["model"].update(factory="river.nothing:here"),
            "model.factory",
            "cannot import",
        ),
        (
            lambda d: d["model"].update(factory="loopline.models:missing"),
            "model.factory",
            "no callable",
        ),
        (lambda d: d["model"].update(factory="not a ref"), "model.factory", "pattern"),
        (lambda d: d.pop("label"), "label", "missing"),
        (
            lambda d: d["training"].update(holdout_fraction=0),
            "training.holdout_fraction",
            "0 holds no example out",
        ),
        (
            lambda d: d["training"].update(holdout_fraction=0.001),
            "<root>",
            "training.holdout_fraction 0.001 is too small for qualification.min_holdout 200: "
            "it takes 200,000 examples",
        ),
        (
            lambda d: d["qualification"].update(window_examples=100),
            "qualification",
            "window_examples 100 is below min_holdout 200",
        ),
        (
            lambda d: d["qualification"].update(min_holdout=6000, window_examples=6000),
            "qualification.min_holdout",
            "less than or equal to 5000",
        ),
        (
            lambda d: d["qualification"].update(settle="label"),
            "<root>",
            "settle = 'label' needs label.on_missing = 'drop'",
        ),
    ],
)
def test_bad_specs_fail_naming_the_key(change: Any, key: str, words: str) -> None:
    data = _data()
    change(data)
    err = _error(data)
    assert err.key == key
    assert words in err.problem


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(SpecError, match="bad.toml: <toml>"):
        load_spec(bad)
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "absent.toml")
