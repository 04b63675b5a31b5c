"""Checks a record's features and event time against the spec.

The Publisher runs these at the call site and the streams run them again on what
arrives (apps may publish without the SDK). Each failure is a
:class:`~loopline.errors.RecordError` with a stable reason code.

>>> from loopline.spec import DEFAULT_SPEC, load_spec
>>> v = FeatureValidator(load_spec(DEFAULT_SPEC))
>>> v.validate({"price": 9.5, "hour": 14, "device": "mobile"}, impute=True)[1]
('category', 'recent_views', 'discount')
>>> v.validate({"price": 9.5, "hour": 25, "device": "mobile"})
Traceback (most recent call last):
...
loopline.errors.RecordError: out_of_range: feature 'hour' = 25 is above max 23.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from loopline.contracts import Features, FeatureValue
from loopline.errors import Reason, RecordError
from loopline.spec import Feature, Spec

Check = Callable[[FeatureValue], FeatureValue]


def _range_check(name: str, feature: Feature) -> Callable[[float], None]:
    lo, hi = feature.min, feature.max

    def check(value: float) -> None:
        if not math.isfinite(value):
            raise RecordError(Reason.OUT_OF_RANGE, f"feature {name!r} is not finite")
        if lo is not None and value < lo:
            raise RecordError(Reason.OUT_OF_RANGE, f"feature {name!r} = {value} is below min {lo}")
        if hi is not None and value > hi:
            raise RecordError(Reason.OUT_OF_RANGE, f"feature {name!r} = {value} is above max {hi}")

    return check


def _compile(name: str, feature: Feature) -> Check:
    def wrong(value: FeatureValue) -> RecordError:
        return RecordError(
            Reason.WRONG_TYPE,
            f"feature {name!r} must be {feature.type}, got {type(value).__name__}",
        )

    if feature.type == "category":
        allowed = frozenset(feature.categories or ())

        def check_category(value: FeatureValue) -> FeatureValue:
            if not isinstance(value, str):
                raise wrong(value)
            if value not in allowed:
                raise RecordError(
                    Reason.OUT_OF_RANGE, f"feature {name!r}: unknown category {value!r}"
                )
            return value

        return check_category
    if feature.type == "bool":

        def check_bool(value: FeatureValue) -> FeatureValue:
            if not isinstance(value, bool):
                raise wrong(value)
            return value

        return check_bool
    in_range = _range_check(name, feature)
    if feature.type == "int":

        def check_int(value: FeatureValue) -> FeatureValue:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise wrong(value)
            if isinstance(value, float):
                if not value.is_integer():
                    raise wrong(value)
                value = int(value)
            in_range(value)
            return value

        return check_int

    def check_float(value: FeatureValue) -> FeatureValue:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong(value)
        in_range(value)
        return float(value)

    return check_float


class FeatureValidator:
    """Validates (and optionally imputes) a record's request-time features."""

    def __init__(self, spec: Spec) -> None:
        self._checks = {name: _compile(name, f) for name, f in spec.features.items()}
        self._required = tuple(n for n, f in spec.features.items() if f.required)
        self._defaults = {n: f.impute for n, f in spec.features.items() if not f.required}
        self._max_future = timedelta(seconds=spec.validation.max_future_seconds)
        self._max_age = timedelta(seconds=spec.validation.max_age_seconds)

    def validate(
        self, features: Mapping[str, FeatureValue], *, impute: bool = False
    ) -> tuple[Features, tuple[str, ...]]:
        """Return the normalised features and the names imputed (only with ``impute``)."""
        checks = self._checks
        out: Features = {}
        for name, value in features.items():
            check = checks.get(name)
            if check is None:
                raise RecordError(Reason.UNKNOWN_FEATURE, f"feature {name!r} is not in the spec")
            if value is not None:
                out[name] = check(value)
        for name in self._required:
            if name not in out:
                raise RecordError(Reason.MISSING_FIELD, f"required feature {name!r} is missing")
        if not impute:
            return out, ()
        imputed = tuple(n for n in self._defaults if n not in out)
        for name in imputed:
            out[name] = self._defaults[name]
        return out, imputed

    def check_time(self, ts: datetime, now: datetime) -> None:
        """Reject event times too far in the future (clock skew) or too old."""
        if ts - now > self._max_future:
            raise RecordError(
                Reason.CLOCK_SKEW, f"ts {ts.isoformat()} is ahead of now {now.isoformat()}"
            )
        if now - ts > self._max_age:
            raise RecordError(Reason.TOO_OLD, f"ts {ts.isoformat()} is older than {self._max_age}")
