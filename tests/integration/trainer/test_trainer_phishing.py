"""River's Phishing dataset through Kafka with a label delay: the trainer's progressive
metrics against River's ``evaluate.progressive_val_score(..., delay=...)``.

Examples are published in the order River reveals the answers (``stream.simulate_qa``).
The trainer scores each example when it arrives, i.e. when its label does; River
scores at question time, ``delay`` examples earlier. With a short delay the two agree
within a point; the gap grows with the delay (staleness River measures and a
label-time score cannot see).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from river import datasets, evaluate, metrics, stream

from loopline.contracts import Example
from loopline.settings import Settings
from loopline.spec import load_spec
from tests.integration.trainer.trainer_support import publish, step_until
from trainer.core import Trainer

SPEC = Path(__file__).with_name("phishing.toml")
DELAY = 10
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def delayed_examples(delay: int) -> list[Example]:
    return [
        Example(
            event_id=f"p{i}",
            entity_id=f"site{i}",
            ts=T0 + timedelta(seconds=i),
            features=x,
            label=float(y),
            label_ts=T0 + timedelta(seconds=i + delay),
        )
        for i, x, y in stream.simulate_qa(datasets.Phishing(), None, delay)
        if y is not None
    ]


def test_progressive_metrics_match_river_with_label_delay(settings: Settings) -> None:
    spec = load_spec(SPEC)
    examples = delayed_examples(DELAY)
    assert len(examples) == 1250
    publish(settings, examples, partition=0)
    trainer = Trainer(settings.replace(spec=SPEC), spec)
    trainer.start()
    try:
        step_until(trainer, lambda: trainer.position.get(0) == 1250, 60, "the whole dataset")
        manifest = trainer.checkpoint() or trainer.parent
    finally:
        trainer.close()
    assert manifest is not None and manifest.examples_seen == 1250
    river_metrics = {
        "accuracy": metrics.Accuracy(),
        "roc_auc": metrics.ROCAUC(),
        "log_loss": metrics.LogLoss(),
    }
    for name, metric in river_metrics.items():
        river = evaluate.progressive_val_score(
            datasets.Phishing(), spec.build_model(), metric, delay=DELAY
        ).get()
        ours = manifest.metrics[name]
        assert ours is not None
        print(f"{name}: trainer {ours:.4f}  river progressive_val_score(delay={DELAY}) {river:.4f}")
        assert abs(ours - river) <= 0.01
