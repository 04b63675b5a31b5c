"""Corrupt and tampered checkpoints are refused loudly, never unpickled; the trainer
resumes from the newest good one and still ends exactly where one run would."""

from __future__ import annotations

import logging
import pickle
from dataclasses import replace
from pathlib import Path

import pytest

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


class Booby:
    """Unpickling this creates a file: proof that a blob was (or was not) unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


@pytest.fixture
def spec() -> Spec:
    base = load_spec(DEFAULT_SPEC)
    training = base.training.model_copy(update={"snapshot_every_examples": 100})
    return base.model_copy(update={"training": training})


def test_corrupt_and_tampered_checkpoints_are_refused(
    settings: Settings, spec: Spec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    examples = make_examples(spec, 900)
    publish(settings, examples[:600], partition=0)
    first = Trainer(settings, spec, batch_size=100)
    first.start()
    try:
        step_until(first, lambda: first.position.get(0) == 600, 60, "600 examples")
        first.checkpoint()
    finally:
        first.close()
    store = store_of(settings)
    good, tampered, corrupt = store.manifests(spec.name)[2::-1]
    marker = tmp_path / "unpickled"
    blob = pickle.dumps(Booby(marker))
    (settings.checkpoint_dir / f"{corrupt.checkpoint_id}.model").write_bytes(blob)
    forged = replace(tampered, examples_seen=tampered.examples_seen + 1)
    (settings.checkpoint_dir / f"{tampered.checkpoint_id}.json").write_bytes(forged.to_json())

    publish(settings, examples[600:], partition=0)
    second = Trainer(settings, spec, batch_size=100)
    with caplog.at_level(logging.ERROR, logger="trainer.checkpointer"):
        second.start()
    try:
        assert second.parent == good
        assert second.position == good.offsets
        refused = [
            r.getMessage() for r in caplog.records if "refusing checkpoint" in r.getMessage()
        ]
        assert any(corrupt.checkpoint_id in m and "sha256" in m for m in refused)
        assert any(tampered.checkpoint_id in m and "signature" in m for m in refused)
        assert not marker.exists()
        step_until(second, lambda: second.position.get(0) == 900, 60, "the rest")
        manifest = second.checkpoint() or second.parent
    finally:
        second.close()
    assert manifest is not None and manifest.lineage == good.lineage
    _, model = store.load(manifest.checkpoint_id)
    probe = make_examples(spec, 50, seed=9)
    assert predictions(spec, model, probe) == predictions(spec, reference(spec, examples), probe)
    assert not marker.exists()


def test_a_new_spec_version_starts_a_fresh_model_from_the_beginning(
    settings: Settings, spec: Spec
) -> None:
    examples = make_examples(spec, 300)
    publish(settings, examples, partition=0)
    old = Trainer(settings, spec, batch_size=100)
    old.start()
    try:
        step_until(old, lambda: old.position.get(0) == 300, 60, "300 examples")
        old.checkpoint()
        assert old.parent is not None
    finally:
        old.close()
    new_spec = spec.model_copy(update={"spec_version": spec.spec_version + 1})
    new = Trainer(settings, new_spec, batch_size=100)
    new.start()
    try:
        assert new.parent is None
        assert new.lineage != old.lineage
        step_until(new, lambda: new.position.get(0) == 300, 60, "all 300 again, from the start")
        manifest = new.checkpoint() or new.parent
    finally:
        new.close()
    assert manifest is not None
    assert manifest.spec_version == spec.spec_version + 1
    assert manifest.lineage == new.lineage
    assert manifest.examples_seen + manifest.examples_excluded <= 300
