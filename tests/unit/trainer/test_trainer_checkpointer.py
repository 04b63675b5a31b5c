from __future__ import annotations

import pytest

from loopline.errors import CheckpointError
from loopline.holdout import DEVELOPMENT_KEY
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from loopline.windows import ExcludedWindows
from tests.unit.trainer.trainer_data import make_examples
from trainer.checkpointer import Checkpointer, new_lineage
from trainer.learner import Learner

SPEC = load_spec(DEFAULT_SPEC)


def trained(n: int) -> Learner:
    learner = Learner(SPEC, SPEC.build_model(), ExcludedWindows(), holdout_key=DEVELOPMENT_KEY)
    for ex in make_examples(SPEC, n):
        learner.observe(ex.event_id, ex.ts, ex.features, ex.label)
    return learner


def test_save_then_restore_gives_the_same_learner(unit_settings: Settings) -> None:
    checkpointer = Checkpointer(unit_settings, SPEC)
    learner = trained(300)
    lineage = new_lineage()
    manifest = checkpointer.save(learner, {0: 200, 1: 100}, None, lineage)
    assert manifest.parent_id is None and manifest.lineage == lineage
    assert manifest.examples_seen == learner.counts.learned
    assert manifest.schema_hash == SPEC.schema_hash
    restored = checkpointer.restore(ExcludedWindows())
    assert restored is not None
    assert restored.manifest == manifest
    assert restored.learner.counts == learner.counts
    assert restored.learner.metrics.values() == learner.metrics.values()
    assert (restored.learner.event_time_min, restored.learner.event_time_max) == (
        learner.event_time_min,
        learner.event_time_max,
    )


def test_offsets_never_go_backwards_from_the_parent(unit_settings: Settings) -> None:
    checkpointer = Checkpointer(unit_settings, SPEC)
    learner = trained(10)
    parent = checkpointer.save(learner, {0: 50, 1: 10}, None, "L")
    child = checkpointer.save(learner, {0: 50, 1: 11, 2: 3}, parent, "L")
    assert child.parent_id == parent.checkpoint_id
    with pytest.raises(CheckpointError, match="behind parent"):
        checkpointer.save(learner, {0: 49, 1: 11, 2: 3}, child, "L")
    with pytest.raises(CheckpointError, match="behind parent"):
        checkpointer.save(learner, {0: 60}, child, "L")


def test_restore_skips_another_feature_schema(unit_settings: Settings) -> None:
    other_features = {**SPEC.features}
    other_features.pop("discount")
    other = SPEC.model_copy(update={"features": other_features})
    assert other.schema_hash != SPEC.schema_hash
    Checkpointer(unit_settings, other).save(trained(5), {0: 5}, None, "L")
    assert Checkpointer(unit_settings, SPEC).restore(ExcludedWindows()) is None
    checkpoint_id = Checkpointer(unit_settings, other).store.manifests()[0].checkpoint_id
    with pytest.raises(CheckpointError, match="schema"):
        Checkpointer(unit_settings, SPEC).load(checkpoint_id, ExcludedWindows())


def test_a_checkpoint_cut_short_by_a_crash_is_not_restored(unit_settings: Settings) -> None:
    checkpointer = Checkpointer(unit_settings, SPEC)
    good = checkpointer.save(trained(20), {0: 20}, None, "L")
    directory = unit_settings.checkpoint_dir
    (directory / "yarn_shop_clicks-29990101T000000000000-000000.state").write_text("{}")
    (directory / "yarn_shop_clicks-29990101T000000000000-000000.model").write_bytes(b"half")
    (directory / ".yarn_shop_clicks-29990101T000000000000-000000.json.1.tmp").write_text("{")
    restored = checkpointer.restore(ExcludedWindows())
    assert restored is not None and restored.manifest == good
