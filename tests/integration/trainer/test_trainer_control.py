"""The trainer in process against the real broker: learning, pause, windows, replay."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from loopline.contracts import CheckpointManifest, CommandKind, Window
from loopline.control import make_command, send
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
from tests.kafka_support import read_topic
from tests.unit.trainer.trainer_data import T0, make_examples
from trainer.core import Trainer


@pytest.fixture
def spec() -> Spec:
    base = load_spec(DEFAULT_SPEC)
    training = base.training.model_copy(
        update={"snapshot_every_examples": 200, "snapshot_every_seconds": 0.5}
    )
    return base.model_copy(update={"training": training})


@pytest.fixture
def trainer(settings: Settings, spec: Spec) -> Iterator[Trainer]:
    trainer = Trainer(settings, spec, batch_size=100)
    trainer.start()
    yield trainer
    trainer.close()


def learned_all(trainer: Trainer, n: int) -> bool:
    return sum(trainer.position.values()) >= n and trainer.parent is not None and not trainer._dirty


def test_learns_test_then_train_and_checkpoints(
    settings: Settings, spec: Spec, trainer: Trainer
) -> None:
    examples = make_examples(spec, 600)
    publish(settings, examples, partition=0)
    step_until(trainer, lambda: learned_all(trainer, 600), 60, "600 examples checkpointed")
    manifest = trainer.parent
    assert manifest is not None
    holdout = sum(
        ex.event_id in Holdout(spec.training.holdout_fraction, DEVELOPMENT_KEY) for ex in examples
    )
    assert manifest.offsets == {0: 600}
    assert manifest.examples_seen == 600 - holdout
    assert manifest.metrics["examples_holdout"] == holdout
    learned = [
        ex
        for ex in examples
        if ex.event_id not in Holdout(spec.training.holdout_fraction, DEVELOPMENT_KEY)
    ]
    assert (manifest.event_time_min, manifest.event_time_max) == (learned[0].ts, learned[-1].ts)
    for name in ("log_loss", "roc_auc", "accuracy", "holdout_log_loss"):
        assert manifest.metrics[name] is not None
    assert any("@" in key for key in manifest.metrics)
    _, model = store_of(settings).load(manifest.checkpoint_id)
    probe = make_examples(spec, 50, seed=9)
    assert predictions(spec, model, probe) == predictions(spec, reference(spec, examples), probe)
    announced = read_topic(settings, "checkpoints", 1, timeout=10)
    assert {msg.key() for msg in announced} == {spec.name.encode()}
    assert CheckpointManifest.from_json(announced[-1].value() or b"") == manifest


def test_pause_keeps_position_and_membership_then_resume(
    settings: Settings, spec: Spec, trainer: Trainer
) -> None:
    first = make_examples(spec, 300)
    publish(settings, first)
    step_until(trainer, lambda: sum(trainer.position.values()) == 300, 60, "first 300")
    send(settings, make_command(CommandKind.PAUSE, spec.name, reason="test"))
    step_until(trainer, lambda: trainer.paused, 30, "the pause")
    position, learned = dict(trainer.position), trainer.learner.counts.learned
    second = make_examples(spec, 300, seed=1, first=300)
    publish(settings, second)
    for _ in range(30):
        trainer.step(0.1)
    assert trainer.position == position
    assert trainer.learner.counts.learned == learned
    assert trainer._consumer is not None and trainer._consumer.assignment()
    send(settings, make_command(CommandKind.RESUME, "*"))
    step_until(trainer, lambda: learned_all(trainer, 600), 60, "all 600 after resume")
    counts = trainer.learner.counts
    assert counts.learned + counts.holdout == 600
    assert counts.duplicates == 0


def test_excluded_window_is_never_learned(settings: Settings, spec: Spec) -> None:
    """Marked before the trainer starts: it reads the whole control topic on start."""
    window = Window(T0 + timedelta(hours=2), T0 + timedelta(hours=4))
    args = {"start": window.start.isoformat(), "end": window.end.isoformat()}
    send(settings, make_command(CommandKind.MARK_ANOMALOUS, spec.name, args=args))
    examples = make_examples(spec, 400)
    publish(settings, examples, partition=0)
    trainer = Trainer(settings, spec, batch_size=100)
    trainer.start()
    try:
        step_until(trainer, lambda: learned_all(trainer, 400), 60, "400 examples")
    finally:
        trainer.close()
    inside = sum(ex.ts in window for ex in examples)
    manifest = trainer.parent
    assert manifest is not None
    assert inside == 120
    assert manifest.examples_excluded == inside
    assert manifest.excluded_windows == (window,)
    _, model = store_of(settings).load(manifest.checkpoint_id)
    probe = make_examples(spec, 50, seed=9)
    expected = reference(spec, examples, [window])
    assert predictions(spec, model, probe) == predictions(spec, expected, probe)


def test_replay_from_an_earlier_checkpoint_undoes_a_window(
    settings: Settings, spec: Spec, trainer: Trainer
) -> None:
    before = make_examples(spec, 300)
    publish(settings, before, partition=0)
    step_until(trainer, lambda: learned_all(trainer, 300), 60, "the first 300")
    earlier = trainer.checkpoint() or trainer.parent
    assert earlier is not None and earlier.offsets == {0: 300}
    bad = make_examples(spec, 200, seed=5, start=T0 + timedelta(days=1), first=300)
    after = make_examples(spec, 200, seed=6, start=T0 + timedelta(days=2), first=500)
    publish(settings, bad + after, partition=0)
    step_until(trainer, lambda: learned_all(trainer, 700), 60, "all 700")
    window = Window(T0 + timedelta(days=1), T0 + timedelta(days=2))
    args = {"start": window.start.isoformat(), "end": window.end.isoformat()}
    send(settings, make_command(CommandKind.MARK_ANOMALOUS, spec.name, args=args))
    command = send(
        settings, make_command(CommandKind.REPLAY, spec.name, args={"from": earlier.checkpoint_id})
    )
    step_until(trainer, lambda: trainer.lineage == f"replay-{command.command_id}", 60, "replay")
    manifest = trainer.parent
    assert manifest is not None
    assert manifest.parent_id == earlier.checkpoint_id
    assert manifest.lineage != earlier.lineage
    assert manifest.offsets == {0: 700}
    assert manifest.examples_excluded == 200
    _, model = store_of(settings).load(manifest.checkpoint_id)
    probe = make_examples(spec, 50, seed=9)
    expected = reference(spec, before + bad + after, [window])
    assert predictions(spec, model, probe) == predictions(spec, expected, probe)
    more = make_examples(spec, 100, seed=7, start=T0 + timedelta(days=3), first=700)
    publish(settings, more, partition=0)
    step_until(trainer, lambda: learned_all(trainer, 800), 60, "examples after the replay")
    assert trainer.parent is not None and trainer.parent.lineage == manifest.lineage


def test_retention_keeps_the_last_k_and_every_served_checkpoint(
    settings: Settings, spec: Spec
) -> None:
    training = spec.training.model_copy(
        update={"snapshot_every_examples": 50, "keep_checkpoints": 2}
    )
    spec = spec.model_copy(update={"training": training})
    trainer = Trainer(settings, spec, batch_size=50)
    trainer.start()
    try:
        publish(settings, make_examples(spec, 100), partition=0)
        step_until(trainer, lambda: learned_all(trainer, 100), 60, "100 examples")
        served = trainer.parent
        assert served is not None
        client = redis.Redis.from_url(settings.redis_url)
        with client:
            client.sadd(settings.key("served"), served.checkpoint_id)
        publish(settings, make_examples(spec, 400, first=100), partition=0)
        step_until(trainer, lambda: learned_all(trainer, 500), 60, "500 examples")
    finally:
        trainer.close()
    kept = [m.checkpoint_id for m in store_of(settings).manifests(spec.name)]
    assert len(kept) == 3
    assert served.checkpoint_id in kept
    assert kept[0] == trainer.parent.checkpoint_id
    states = sorted(p.name.removesuffix(".state") for p in settings.checkpoint_dir.glob("*.state"))
    assert states == sorted(kept)


def test_a_regression_spec_trains_and_reports_its_metrics(settings: Settings) -> None:
    spec = load_spec(Path(__file__).parents[2] / "specs" / "delivery_eta.toml")
    examples = make_examples(spec, 300)
    publish(settings, examples, partition=0)
    trainer = Trainer(settings, spec, batch_size=100)
    trainer.start()
    try:
        step_until(trainer, lambda: trainer.position.get(0) == 300, 60, "300 examples")
        manifest = trainer.checkpoint() or trainer.parent
    finally:
        trainer.close()
    assert manifest is not None and manifest.model_name == "delivery_eta"
    assert manifest.metrics["mae"] is not None and manifest.metrics["rmse"] is not None
    _, model = store_of(settings).load(manifest.checkpoint_id)
    probe = make_examples(spec, 20, seed=9)
    assert predictions(spec, model, probe) == predictions(spec, reference(spec, examples), probe)


def test_a_trainer_started_after_a_pause_joins_paused(settings: Settings, spec: Spec) -> None:
    send(settings, make_command(CommandKind.PAUSE, "*", reason="before start"))
    publish(settings, make_examples(spec, 100), partition=0)
    trainer = Trainer(settings, spec, batch_size=100)
    trainer.start()
    try:
        assert trainer.paused
        step_until(trainer, lambda: trainer._assigned, 30, "the assignment")
        for _ in range(10):
            trainer.step(0.1)
        assert trainer.position == {}
        send(settings, make_command(CommandKind.RESUME, spec.name))
        step_until(trainer, lambda: learned_all(trainer, 100), 60, "100 examples after resume")
    finally:
        trainer.close()


def test_clearing_one_mark_keeps_an_overlapping_one(
    settings: Settings, spec: Spec, trainer: Trainer
) -> None:
    def window_args(a: int, b: int) -> dict[str, str]:
        return {
            "start": (T0 + timedelta(hours=a)).isoformat(),
            "end": (T0 + timedelta(hours=b)).isoformat(),
        }

    first = make_command(CommandKind.MARK_ANOMALOUS, spec.name, args=window_args(0, 3))
    second = make_command(CommandKind.MARK_ANOMALOUS, spec.name, args=window_args(2, 5))
    clear = make_command(CommandKind.CLEAR_ANOMALOUS, spec.name, args={"id": first.command_id})
    for command in (first, second, clear):
        send(settings, command)
    step_until(trainer, lambda: clear.command_id in trainer._applied, 30, "the clear")
    assert list(trainer.windows) == [Window(T0 + timedelta(hours=2), T0 + timedelta(hours=5))]


def test_a_command_that_cannot_apply_is_reported_refused_with_why(
    settings: Settings, spec: Spec, trainer: Trainer
) -> None:
    replay = make_command(CommandKind.REPLAY, spec.name, args={"from": "ck-missing"})
    clear = make_command(CommandKind.CLEAR_ANOMALOUS, spec.name, args={"id": "no-such-mark"})
    for command in (replay, clear):
        send(settings, command)
    step_until(trainer, lambda: clear.command_id in dict(trainer._refused), 30, "the refusals")
    refused = dict(trainer._refused)
    assert "ck-missing" in refused[replay.command_id]
    assert "no anomalous window changes" in refused[clear.command_id]
    assert not {replay.command_id, clear.command_id} & set(trainer._applied)
