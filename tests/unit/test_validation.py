from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopline.errors import Reason, RecordError
from loopline.spec import DEFAULT_SPEC, load_spec
from loopline.validation import FeatureValidator

SPEC = load_spec(DEFAULT_SPEC)
VALID = {
    "price": 12.0,
    "category": "wool",
    "hour": 9,
    "device": "mobile",
    "recent_views": 3,
    "discount": True,
}


@pytest.fixture
def validator() -> FeatureValidator:
    return FeatureValidator(SPEC)


def _reason(validator: FeatureValidator, **changes: object) -> Reason:
    features = {**VALID, **changes}
    with pytest.raises(RecordError) as info:
        validator.validate({k: v for k, v in features.items() if v is not ...})  # type: ignore[misc]
    return info.value.reason


def test_valid_features_pass_unchanged(validator: FeatureValidator) -> None:
    assert validator.validate(VALID) == (VALID, ())


def test_each_reason(validator: FeatureValidator) -> None:
    assert _reason(validator, colour="red") == Reason.UNKNOWN_FEATURE
    assert _reason(validator, price=...) == Reason.MISSING_FIELD
    assert _reason(validator, price=None) == Reason.MISSING_FIELD
    assert _reason(validator, price="12") == Reason.WRONG_TYPE
    assert _reason(validator, price=True) == Reason.WRONG_TYPE
    assert _reason(validator, price=0.1) == Reason.OUT_OF_RANGE
    assert _reason(validator, price=math.inf) == Reason.OUT_OF_RANGE
    assert _reason(validator, price=math.nan) == Reason.OUT_OF_RANGE
    assert _reason(validator, hour=3.5) == Reason.WRONG_TYPE
    assert _reason(validator, hour=24) == Reason.OUT_OF_RANGE
    assert _reason(validator, device="fridge") == Reason.OUT_OF_RANGE
    assert _reason(validator, device=1) == Reason.WRONG_TYPE
    assert _reason(validator, discount=1) == Reason.WRONG_TYPE


def test_imputation_fills_optional_features_and_says_which(validator: FeatureValidator) -> None:
    features, imputed = validator.validate(
        {"price": 5, "hour": 23.0, "device": "tablet", "category": None}, impute=True
    )
    assert imputed == ("category", "recent_views", "discount")
    assert features == {
        "price": 5.0,
        "hour": 23,
        "device": "tablet",
        "category": "unknown",
        "recent_views": 0,
        "discount": False,
    }


def test_event_time_sanity(validator: FeatureValidator) -> None:
    now = datetime.now(UTC)
    validator.check_time(now - timedelta(days=1), now)
    with pytest.raises(RecordError) as skew:
        validator.check_time(now + timedelta(hours=1), now)
    assert skew.value.reason == Reason.CLOCK_SKEW
    with pytest.raises(RecordError) as old:
        validator.check_time(now - timedelta(days=8), now)
    assert old.value.reason == Reason.TOO_OLD


feature_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(["wool", "mobile", "silk", "desktop"]),
)


@given(st.dictionaries(st.sampled_from([*VALID, "extra"]), feature_values))
def test_fuzz_either_valid_or_a_reason(features: dict[str, object]) -> None:
    validator = FeatureValidator(SPEC)
    try:
        clean, imputed = validator.validate(features, impute=True)  # type: ignore[arg-type]
    except RecordError as exc:
        assert isinstance(exc.reason, Reason)
    else:
        assert set(clean) == set(SPEC.features)
        assert set(imputed) <= {n for n, f in SPEC.features.items() if not f.required}
        assert validator.validate(clean) == (clean, ())
