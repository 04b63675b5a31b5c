"""Synthetic examples that fit a spec's features, for the trainer's tests and bench."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from loopline.contracts import Example, Features
from loopline.spec import Spec

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def features_for(spec: Spec, rng: random.Random) -> Features:
    features: Features = {}
    for name, feature in spec.features.items():
        if feature.type == "category":
            features[name] = rng.choice(feature.categories or ("x",))
        elif feature.type == "bool":
            features[name] = rng.random() < 0.3
        elif feature.type == "int":
            features[name] = rng.randint(int(feature.min or 0), int(min(feature.max or 50, 50)))
        else:
            features[name] = round(rng.uniform(feature.min or 0.0, min(feature.max or 100, 100)), 3)
    for name in spec.entity.features:
        features[name] = round(rng.uniform(0, 10), 3)
    return features


def target(spec: Spec, features: Features, rng: random.Random) -> float:
    """A learnable label: a noisy function of the numeric features."""
    numeric = [float(v) for v in features.values() if isinstance(v, int | float)]
    signal = math.sin(sum(numeric[:3]) / 7) + (0.8 if features.get("discount") is True else 0.0)
    if spec.label.kind == "binary":
        return 1.0 if signal + rng.gauss(0, 0.5) > 0.6 else 0.0
    return round(20 + 10 * signal + rng.gauss(0, 1), 3)


def make_examples(
    spec: Spec,
    n: int,
    seed: int = 0,
    start: datetime = T0,
    step_seconds: float = 60.0,
    first: int = 0,
    serial: bool = False,
) -> list[Example]:
    """``n`` examples one ``step_seconds`` apart in event time, ids ``e<first>...``;
    with ``serial``, a ``serial`` feature repeats the number in the id."""
    rng = random.Random(seed)
    examples = []
    for i in range(first, first + n):
        features = features_for(spec, rng)
        if serial:
            features["serial"] = i
        ts = start + timedelta(seconds=(i - first) * step_seconds)
        examples.append(
            Example(
                event_id=f"e{i}",
                entity_id=f"u{i % 97}",
                ts=ts,
                features=features,
                label=target(spec, features, rng),
                label_ts=ts + timedelta(seconds=30),
            )
        )
    return examples
