"""Synthetic yarn-shop rows, River models trained on them, and checkpoints of those models."""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from loopline.checkpoints import CheckpointStore
from loopline.contracts import CheckpointManifest, Example, Features
from loopline.holdout import DEVELOPMENT_KEY, Holdout
from loopline.spec import Spec

CATEGORIES = ("wool", "cotton", "alpaca", "mohair", "silk", "acrylic", "blend", "unknown")


def request_features(rng: random.Random) -> Features:
    return {
        "price": round(rng.uniform(1, 120), 2),
        "category": rng.choice(CATEGORIES),
        "hour": rng.randrange(24),
        "device": rng.choice(("mobile", "desktop", "tablet")),
        "recent_views": rng.randrange(30),
        "discount": rng.random() < 0.3,
    }


def click_probability(features: Features) -> float:
    logit = (
        -3.2
        + 1.6 * bool(features["discount"])
        + 9.0 * float(features.get("click_rate_24h") or 0.0)
        + 0.04 * float(features["recent_views"] or 0)  # type: ignore[arg-type]
        - 0.01 * float(features["price"])  # type: ignore[arg-type]
    )
    return 1 / (1 + math.exp(-logit))


def examples(n: int, seed: int = 1, *, holdout: float | None = None) -> list[Example]:
    """``n`` labelled rows; with ``holdout``, only rows whose event id is in that slice."""
    rng = random.Random(seed)
    rows: list[Example] = []
    ts = datetime.now(UTC) - timedelta(minutes=30)
    i = 0
    while len(rows) < n:
        i += 1
        event_id = f"ev-{seed}-{i}"
        if holdout is not None and event_id not in Holdout(holdout, DEVELOPMENT_KEY):
            continue
        features = request_features(rng) | {
            "click_rate_24h": round(rng.random() * 0.3, 3),
            "impressions_1h": rng.randrange(20),
            "seconds_since_last": rng.randrange(3600),
        }
        label = 1.0 if rng.random() < click_probability(features) else 0.0
        rows.append(Example(event_id, f"user-{rng.randrange(500)}", ts, features, label))
    return rows


def train(spec: Spec, rows: list[Example], model: Any | None = None) -> Any:
    model = model if model is not None else spec.build_model()
    binary = spec.label.kind == "binary"
    for row in rows:
        x = {k: v for k, v in row.features.items() if v is not None}
        model.learn_one(x, bool(row.label) if binary else row.label)
    return model


def manifest(
    spec: Spec,
    checkpoint_id: str,
    *,
    lineage: str = "lineage-a",
    examples_seen: int = 0,
    schema_hash: str | None = None,
    created_at: datetime | None = None,
    metrics: dict[str, float | None] | None = None,
) -> CheckpointManifest:
    return CheckpointManifest(
        checkpoint_id=checkpoint_id,
        parent_id=None,
        model_name=spec.name,
        spec_version=spec.spec_version,
        schema_hash=schema_hash or spec.schema_hash,
        offsets={0: examples_seen, 2: 7},
        event_time_min=None,
        event_time_max=None,
        examples_seen=examples_seen,
        examples_excluded=0,
        excluded_windows=(),
        metrics=metrics or {},
        blob_sha256="",
        created_at=created_at or datetime.now(UTC),
        lineage=lineage,
    )


def save(
    store: CheckpointStore, spec: Spec, checkpoint_id: str, model: Any, **fields: Any
) -> CheckpointManifest:
    return store.save(manifest(spec, checkpoint_id, **fields), model)


class ConstantModel:
    """Always the same probability: what an untrained or broken model looks like."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        return {False: 1 - self.p, True: self.p}


class RaisingModel:
    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        raise RuntimeError("the model is broken")


class SlowModel:
    """Sleeps past any latency budget before answering like ``inner``."""

    def __init__(self, inner: Any, seconds: float = 0.02) -> None:
        self.inner = inner
        self.seconds = seconds

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        time.sleep(self.seconds)
        return self.inner.predict_proba_one(x)  # type: ignore[no-any-return]
