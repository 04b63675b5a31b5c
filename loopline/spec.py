"""The use-case spec: one declarative TOML file that every worker reads.

It names the entity, every feature, the label, the model factory and the policies
for training, qualification, ramp-ups and fallback. Nothing else in Loopline holds a
feature list. A bad spec fails fast with the file, the key and what was expected.

>>> spec = load_spec(DEFAULT_SPEC)
>>> spec.name, spec.label.kind
('yarn_shop_clicks', 'binary')
"""

from __future__ import annotations

import hashlib
import importlib
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from loopline.errors import SpecError

#: Holdout examples the pusher keeps in memory, newest first out of its tail.
HOLDOUT_CAPACITY = 5000
#: Records of each partition of ``examples`` (and ``predictions``, ``labels``) the
#: pusher reads back on start to rebuild its holdout and online metrics.
TAIL_RECORDS = 50_000

DEFAULT_SPEC = Path(__file__).parent / "specs" / "yarn_shop.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Section):
    """One request-time feature the app sends with each event."""

    type: Literal["float", "int", "bool", "category"]
    required: bool = True
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    impute: float | int | bool | str | None = None
    description: str = ""

    @model_validator(mode="after")
    def _coherent(self) -> Feature:
        if self.type == "category" and not self.categories:
            raise ValueError("a category feature needs a non-empty 'categories' list")
        if self.type != "category" and self.categories:
            raise ValueError(f"'categories' only applies to category features, not {self.type}")
        if self.type in ("bool", "category") and (self.min is not None or self.max is not None):
            raise ValueError(f"'min'/'max' do not apply to {self.type} features")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if not self.required and self.impute is None:
            raise ValueError("an optional feature needs an 'impute' value")
        if (
            self.impute is not None
            and self.type == "category"
            and self.impute not in (self.categories or ())
        ):
            raise ValueError(f"impute {self.impute!r} is not one of the categories")
        return self


class EntityFeature(_Section):
    """A per-entity feature the streams compute and keep fresh in the online store."""

    kind: Literal["count", "label_rate", "seconds_since_last"]
    window_seconds: int = Field(default=3600, gt=0)
    description: str = ""


class Entity(_Section):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    features: dict[str, EntityFeature] = Field(default_factory=dict)


class LabelSpec(_Section):
    kind: Literal["binary", "regression"]
    horizon_seconds: float = Field(gt=0)
    on_missing: Literal["default", "drop"] = "default"
    default: float | None = None
    description: str = ""

    @model_validator(mode="after")
    def _default_needed(self) -> LabelSpec:
        if self.on_missing == "default" and self.default is None:
            raise ValueError("on_missing = 'default' needs a 'default' label value")
        if self.kind == "binary" and self.default not in (None, 0, 1):
            raise ValueError("a binary label's default must be 0 or 1")
        return self


class ModelSpec(_Section):
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 42


class Validation(_Section):
    max_future_seconds: float = Field(default=300, ge=0)
    max_age_seconds: float = Field(default=7 * 86400, gt=0)
    # Bounded so that a record, kept whole in the streams' state and commit record, stays
    # well under Kafka's default 1 MB message size.
    max_record_bytes: int = Field(default=64 * 1024, gt=0, le=128 * 1024)


class Training(_Section):
    holdout_fraction: float = Field(default=0.1, ge=0, lt=1)
    snapshot_every_examples: int = Field(default=5000, gt=0)
    snapshot_every_seconds: float = Field(default=30, gt=0)
    metrics: tuple[str, ...] = ("log_loss", "roc_auc", "accuracy")
    metric_window_seconds: float = Field(default=3600, gt=0)
    keep_checkpoints: int = Field(default=10, gt=0)

    @field_validator("holdout_fraction")
    @classmethod
    def _holds_something_out(cls, value: float) -> float:
        if value == 0:
            raise ValueError(
                "0 holds no example out, so the pusher could never qualify a checkpoint "
                "(use a share such as 0.1)"
            )
        return value


class Qualification(_Section):
    """How the pusher judges a checkpoint: on the recent, settled holdout (docs/spec.md)."""

    metric: str = "log_loss"
    higher_is_better: bool = False
    tolerance: float = Field(default=0.01, ge=0)
    min_holdout: int = Field(default=200, gt=0, le=HOLDOUT_CAPACITY)
    window_seconds: float = Field(default=3600, gt=0)
    window_examples: int = Field(default=500, gt=0, le=HOLDOUT_CAPACITY)
    settle: Literal["horizon", "label"] = "horizon"
    calibration_tolerance: float = Field(default=0.02, ge=0)
    cold_start_examples: int = Field(default=200, ge=0)
    score_mean_min: float = 0.0
    score_mean_max: float = 1.0
    min_score_std: float = Field(default=1e-4, ge=0)
    max_latency_ms: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _window_holds_min_holdout(self) -> Qualification:
        if self.window_examples < self.min_holdout:
            raise ValueError(
                f"window_examples {self.window_examples} is below min_holdout "
                f"{self.min_holdout}: the recent holdout could never hold enough examples"
            )
        return self


class Guardrail(_Section):
    metric: str
    max_degradation: float = Field(ge=0)
    min_samples: int = Field(default=100, gt=0)


class Ramp(_Section):
    stages: tuple[float, ...] = (1, 5, 25, 50, 100)
    dwell_seconds: float = Field(default=300, ge=0)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_latency_p99_ms: float = Field(default=50, gt=0)
    guardrails: tuple[Guardrail, ...] = ()

    @model_validator(mode="after")
    def _increasing(self) -> Ramp:
        stages = self.stages
        if not stages or stages[-1] != 100:
            raise ValueError("stages must end at 100 (percent of traffic)")
        if any(not 0 < s <= 100 for s in stages) or list(stages) != sorted(set(stages)):
            raise ValueError("stages must be strictly increasing percentages in (0, 100]")
        return self


class Fallback(_Section):
    """What serving answers when no model can: a lookup on one feature, or a constant."""

    kind: Literal["constant", "lookup"]
    value: float
    feature: str | None = None
    table: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _lookup_needs_feature(self) -> Fallback:
        if self.kind == "lookup" and (not self.feature or not self.table):
            raise ValueError("a lookup fallback needs 'feature' and a non-empty 'table'")
        return self


class Health(_Section):
    window_seconds: float = Field(default=60, gt=0)
    baseline_windows: int = Field(default=10, gt=0)
    min_events: int = Field(default=50, ge=0)
    max_volume_ratio: float = Field(default=5.0, gt=1)
    max_reject_rate: float = Field(default=0.2, ge=0, le=1)
    max_missing_rate_increase: float = Field(default=0.3, ge=0, le=1)
    max_label_rate_change: float = Field(default=0.5, ge=0)
    max_mean_shift_sigmas: float = Field(default=6.0, gt=0)
    auto_pause: bool = True


class Spec(_Section):
    """A validated use-case spec. Load it with :func:`load_spec`."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    spec_version: int = Field(ge=1)
    description: str = ""
    entity: Entity
    features: dict[str, Feature]
    label: LabelSpec
    model: ModelSpec
    validation: Validation = Validation()
    training: Training = Training()
    qualification: Qualification = Qualification()
    ramp: Ramp = Ramp()
    fallback: Fallback
    health: Health = Health()

    @model_validator(mode="after")
    def _cross_checks(self) -> Spec:
        if not self.features:
            raise ValueError("features: at least one feature is needed")
        clash = set(self.features) & set(self.entity.features)
        if clash:
            raise ValueError(f"entity.features repeat request features: {sorted(clash)}")
        fb = self.fallback
        if fb.kind == "lookup" and fb.feature not in self.features:
            raise ValueError(f"fallback.feature {fb.feature!r} is not a declared feature")
        self._holdout_reachable()
        return self

    def _holdout_reachable(self) -> None:
        """The pusher must be able to gather ``min_holdout`` settled holdout examples."""
        q, fraction = self.qualification, self.training.holdout_fraction
        needed = q.min_holdout / fraction
        if needed > TAIL_RECORDS:
            raise ValueError(
                f"training.holdout_fraction {fraction:g} is too small for "
                f"qualification.min_holdout {q.min_holdout}: it takes {needed:,.0f} examples "
                f"to hold that many out, more than the {TAIL_RECORDS:,} of each partition the "
                f"pusher reads back on start (raise holdout_fraction or lower min_holdout)"
            )
        if q.settle == "label" and self.label.on_missing == "default":
            raise ValueError(
                "qualification.settle = 'label' needs label.on_missing = 'drop': defaulted "
                "labels only arrive at the horizon, so the recent holdout would hold the "
                "explicit labels alone"
            )

    @property
    def all_feature_names(self) -> tuple[str, ...]:
        """Request features then entity features: what a model sees."""
        return (*self.features, *self.entity.features)

    @property
    def schema_hash(self) -> str:
        """Identifies the feature schema; models are only comparable under the same one."""
        schema = {
            "features": {
                n: f.model_dump(include={"type", "categories"}) for n, f in self.features.items()
            },
            "entity": {
                n: f.model_dump(include={"kind", "window_seconds"})
                for n, f in self.entity.features.items()
            },
        }
        return hashlib.sha256(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

    def model_factory(self) -> Callable[..., Any]:
        return resolve_callable(self.model.factory)

    def build_model(self) -> Any:
        """A fresh estimator from the spec's factory and params."""
        return self.model_factory()(**self.model.params)


def resolve_callable(ref: str) -> Callable[..., Any]:
    """Import ``module:callable``."""
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from None
    obj = getattr(module, attr, None)
    if not callable(obj):
        raise ValueError(f"{module_name!r} has no callable {attr!r}")
    return obj  # type: ignore[no-any-return]


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file; raise :class:`SpecError` naming file and key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(path, "<file>", "no such file (set LOOPLINE_SPEC or --spec)") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(path, "<toml>", str(exc)) from None
    return parse_spec(data, path)


def parse_spec(data: dict[str, Any], path: str | Path = "<spec>") -> Spec:
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        raise SpecError(path, key, _describe(err)) from None
    try:
        spec.model_factory()
    except ValueError as exc:
        raise SpecError(path, "model.factory", str(exc)) from None
    return spec


def _describe(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (check the spelling against the spec reference)"
    if err["type"] == "missing":
        return "required key is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{msg} (got {err['input']!r})" if err["type"] != "value_error" else msg
