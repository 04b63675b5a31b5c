"""River's Phishing dataset through Kafka with a label delay: the trainer's progressive
metrics against River's ``evaluate.progressive_val_score``.

Examples are published in the order River reveals the answers (``stream.simulate_qa``),
the holdout slice's rows left out, so that the trainer learns every row River does.
The trainer scores each example when it arrives, i.e. when its label does: exactly
River's test-then-train loop over the examples in that order. River with ``delay``
scores at question time, ``delay`` examples earlier; that staleness is the serving
side's to measure (the gap is printed, not asserted).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from river import datasets, evaluate, metrics, stream

from loopline.contracts import Example
from loopline.holdout import DEVELOPMENT_KEY, Holdout
from loopline.settings import Settings
from loopline.spec import load_spec
from tests.integration.trainer.trainer_support import publish, step_until
from trainer.core import Trainer

SPEC = Path(__file__).with_name("phishing.toml")
DELAY = 10
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def learned_rows(fraction: float) -> list[tuple[str, dict[str, Any], bool]]:
    """Phishing's rows outside the holdout slice, each with its event id."""
    rows = [(f"p{i}", x, y) for i, (x, y) in enumerate(datasets.Phishing())]
    holdout = Holdout(fraction, DEVELOPMENT_KEY)  # the tests' settings: development mode
    return [row for row in rows if row[0] not in holdout]


def delayed_examples(rows: list[tuple[str, dict[str, Any], bool]], delay: int) -> list[Example]:
    dataset = [(x, y) for _, x, y in rows]
    return [
        Example(
            event_id=rows[i][0],
            entity_id=f"site{i}",
            ts=T0 + timedelta(seconds=i),
            features=x,
            label=float(y),
            label_ts=T0 + timedelta(seconds=i + delay),
        )
        for i, x, y in stream.simulate_qa(dataset, None, delay)
        if y is not None
    ]


def test_progressive_metrics_match_river_with_label_delay(settings: Settings) -> None:
    spec = load_spec(SPEC)
    rows = learned_rows(spec.training.holdout_fraction)
    examples = delayed_examples(rows, DELAY)
    n = len(examples)
    assert 900 < n < 1100
    publish(settings, examples, partition=0)
    trainer = Trainer(settings.replace(spec=SPEC), spec)
    trainer.start()
    try:
        step_until(trainer, lambda: trainer.position.get(0) == n, 60, "the whole dataset")
        manifest = trainer.checkpoint() or trainer.parent
    finally:
        trainer.close()
    assert manifest is not None and manifest.examples_seen == n
    river_metrics = {
        "accuracy": metrics.Accuracy(),
        "roc_auc": metrics.ROCAUC(),
        "log_loss": metrics.LogLoss(),
    }
    dataset = [(x, y) for _, x, y in rows]
    for name, metric in river_metrics.items():
        river = evaluate.progressive_val_score(dataset, spec.build_model(), metric).get()
        at_question = evaluate.progressive_val_score(
            dataset, spec.build_model(), metric.clone(), delay=DELAY
        ).get()
        ours = manifest.metrics[name]
        assert ours is not None
        print(f"{name}: trainer {ours:.4f}  river {river:.4f}  (delay={DELAY}: {at_question:.4f})")
        # River's ROCAUC approximates over a fixed set of thresholds; the others are exact.
        assert abs(ours - river) <= (0.01 if name == "roc_auc" else 1e-9)
