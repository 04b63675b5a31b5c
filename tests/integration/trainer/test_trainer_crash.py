"""A real trainer process, SIGKILLed mid-stream and restarted, ends exactly where one
uninterrupted run would: no example learned twice, none skipped."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from loopline.devstack import free_port
from loopline.holdout import DEVELOPMENT_KEY, Holdout
from loopline.settings import Settings
from loopline.spec import load_spec
from tests.integration.trainer.trainer_support import (
    newest,
    predictions,
    publish,
    reference,
    spawn_trainer,
    spec_file,
    store_of,
    wait_for,
)
from tests.unit.trainer.trainer_data import make_examples

TOTAL = 24_000


def kill(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            kill(process)


def crash_then_finish(
    settings: Settings, spec_path: Path, log: Path, kill_past: tuple[int, ...]
) -> str:
    """Kill the trainer as soon as it has checkpointed past each of ``kill_past``; restart,
    let it finish, scrape its Prometheus metrics and stop it with SIGTERM. Each restart
    waits for the killed trainer's lease to lapse (a short TTL here)."""
    settings = settings.replace(trainer_lease_seconds=2.0)
    name = load_spec(spec_path).name
    kills = []
    for past in kill_past:
        process = spawn_trainer(settings, spec_path, log)
        try:
            manifest = wait_for(
                lambda p=past: (m := newest(settings, name)) and sum(m.offsets.values()) > p and m,
                90,
                f"a checkpoint past offset {past}",
                pause=0.005,
            )
            kill(process)
        finally:
            stop(process)
        kills.append(sum(manifest.offsets.values()))
    assert all(k < TOTAL for k in kills), f"the trainer finished before it was killed: {kills}"
    port = free_port()
    process = spawn_trainer(settings, spec_path, log, metrics_port=port)
    try:
        wait_for(
            lambda: (m := newest(settings, name)) and sum(m.offsets.values()) == TOTAL,
            120,
            "the whole stream checkpointed",
        )
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        stop(process)
    assert process.returncode == 0
    return scraped


@pytest.fixture
def fast_spec(tmp_path: Path) -> Path:
    return spec_file(
        tmp_path, training__snapshot_every_examples=500, training__snapshot_every_seconds=0.2
    )


def test_killed_trainer_equals_one_uninterrupted_run(
    settings: Settings, tmp_path: Path, fast_spec: Path
) -> None:
    spec = load_spec(fast_spec)
    examples = make_examples(spec, TOTAL)
    publish(settings, examples, partition=0)
    scraped = crash_then_finish(settings, fast_spec, tmp_path / "trainer.log", (3000, 9000))
    assert f'loopline_trainer_examples_total{{model="{spec.name}",outcome="learned"}}' in scraped
    assert "loopline_trainer_progressive_metric" in scraped
    manifest = newest(settings, spec.name)
    assert manifest is not None
    assert {m.lineage for m in store_of(settings).manifests(spec.name)} == {manifest.lineage}
    holdout = sum(
        ex.event_id in Holdout(spec.training.holdout_fraction, DEVELOPMENT_KEY) for ex in examples
    )
    assert manifest.examples_seen == TOTAL - holdout
    assert manifest.metrics["examples_duplicate"] == 0
    _, model = store_of(settings).load(manifest.checkpoint_id)
    probe = make_examples(spec, 200, seed=99)
    assert predictions(spec, model, probe) == predictions(spec, reference(spec, examples), probe)


def test_killed_trainer_learns_each_example_once_across_partitions(
    settings: Settings, tmp_path: Path
) -> None:
    spec_path = spec_file(
        tmp_path,
        model__factory="tests.integration.trainer.trainer_recorder:recorder",
        model__params={},
        training__snapshot_every_examples=500,
        training__snapshot_every_seconds=0.2,
    )
    spec = load_spec(spec_path)
    examples = make_examples(spec, TOTAL, serial=True)
    publish(settings, examples)
    crash_then_finish(settings, spec_path, tmp_path / "trainer.log", (6000,))
    manifest = newest(settings, spec.name)
    assert manifest is not None
    assert len(manifest.offsets) == 3
    _, model = store_of(settings).load(manifest.checkpoint_id)
    expected = sorted(
        ex.event_id
        for ex in examples
        if ex.event_id not in Holdout(spec.training.holdout_fraction, DEVELOPMENT_KEY)
    )
    assert sorted(model.learned) == expected
