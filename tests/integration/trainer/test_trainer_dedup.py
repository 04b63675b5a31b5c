"""Events that reach ``examples`` twice at different offsets (a re-published backfill,
a zombie streams worker) are learned and scored once, counted as duplicates, and a
restored trainer still recognises what its checkpoint had seen."""

from __future__ import annotations

import pytest

from loopline.holdout import DEVELOPMENT_KEY, Holdout
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, Spec, load_spec
from tests.integration.trainer.trainer_support import (
    predictions,
    publish,
    reference,
    step_until,
    store_of,
)
from tests.unit.trainer.trainer_data import make_examples
from trainer.core import Trainer

N = 600


@pytest.fixture
def spec() -> Spec:
    base = load_spec(DEFAULT_SPEC)
    training = base.training.model_copy(update={"snapshot_every_examples": 200})
    return base.model_copy(update={"training": training})


def run_until(settings: Settings, spec: Spec, records: int) -> Trainer:
    trainer = Trainer(settings, spec, batch_size=100)
    trainer.start()
    try:
        step_until(
            trainer, lambda: sum(trainer.position.values()) == records, 60, f"{records} records"
        )
        trainer.checkpoint()
    finally:
        trainer.close()
    return trainer


def test_the_same_events_published_again_are_counted_once(settings: Settings, spec: Spec) -> None:
    examples = make_examples(spec, N)
    holdout = sum(
        ex.event_id in Holdout(spec.training.holdout_fraction, DEVELOPMENT_KEY) for ex in examples
    )
    publish(settings, examples, partition=0)
    publish(settings, examples, partition=0)  # the same event ids, each at a new offset
    first = run_until(settings, spec, 2 * N)
    manifest = first.parent
    assert manifest is not None
    assert sum(manifest.offsets.values()) == 2 * N
    assert manifest.examples_seen == N - holdout
    assert manifest.metrics["examples_holdout"] == holdout
    assert manifest.metrics["examples_duplicate"] == N
    # Restored from that checkpoint, the trainer drops a third copy as well.
    publish(settings, examples[: N // 2], partition=0)
    second = run_until(settings, spec, 2 * N + N // 2)
    final = second.parent
    assert final is not None and final.lineage == manifest.lineage
    assert final.examples_seen == N - holdout
    assert final.metrics["examples_holdout"] == holdout
    assert final.metrics["examples_duplicate"] == N + N // 2
    # Neither learned nor scored again: the metrics are those of the first copy.
    assert {k: v for k, v in final.metrics.items() if k != "examples_duplicate"} == {
        k: v for k, v in manifest.metrics.items() if k != "examples_duplicate"
    }
    _, model = store_of(settings).load(final.checkpoint_id)
    probe = make_examples(spec, 50, seed=9)
    assert predictions(spec, model, probe) == predictions(spec, reference(spec, examples), probe)
