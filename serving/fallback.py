"""The spec's fallback heuristic: what serving answers when no model can.

>>> from loopline.spec import DEFAULT_SPEC, load_spec
>>> Fallback(load_spec(DEFAULT_SPEC)).score({"category": "silk"})
0.08
"""

from __future__ import annotations

from enum import StrEnum

from loopline.contracts import Features
from loopline.spec import Spec

#: ``model_version`` of an answer no model was asked for.
FALLBACK_VERSION = "fallback"


class FallbackReason(StrEnum):
    KILL_SWITCH = "kill_switch"
    NO_MODEL = "no_model"
    REDIS = "redis_unavailable"
    MODEL_ERROR = "model_error"
    LATENCY = "latency_budget"
    INTERNAL = "internal_error"


class Fallback:
    """A constant, or a lookup on one request feature with the constant as default."""

    def __init__(self, spec: Spec) -> None:
        self._value = spec.fallback.value
        self._feature = spec.fallback.feature if spec.fallback.kind == "lookup" else None
        self._table = dict(spec.fallback.table)

    def score(self, features: Features) -> float:
        if self._feature is None:
            return self._value
        return self._table.get(str(features.get(self._feature)), self._value)
