"""Helpers for the trainer's integration tests: publishing, specs, processes, references."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from loopline.checkpoints import CheckpointStore
from loopline.contracts import CheckpointManifest, Example, Window
from loopline.holdout import DEVELOPMENT_KEY, Holdout
from loopline.kafka import producer_config
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, Spec, load_spec
from trainer.core import Trainer

ROOT = Path(__file__).resolve().parents[3]


def publish(settings: Settings, examples: Iterable[Example], partition: int | None = None) -> None:
    """Produce Examples straight onto ``examples`` (keyed by entity, or all to one partition)."""
    producer = Producer(producer_config(settings))
    topic = settings.topic("examples")
    for example in examples:
        if partition is None:
            producer.produce(topic, example.to_json(), example.entity_id.encode())
        else:
            producer.produce(topic, example.to_json(), example.entity_id.encode(), partition)
        producer.poll(0)
    assert producer.flush(30) == 0


def spec_file(tmp_path: Path, base: Path = DEFAULT_SPEC, **changes: Any) -> Path:
    """A copy of a spec with top-level keys of its sections replaced (``training__x=1``)."""
    text = base.read_text()
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        rendered = (
            f'"{value}"'
            if isinstance(value, str)
            else repr(value).lower()
            if isinstance(value, bool)
            else repr(value)
        )
        # Within the section: the lines up to the next header (values may hold "[").
        pattern = re.compile(rf"(^\[{section}\]\n(?:(?!\[)[^\n]*\n)*?){key} = [^\n]*$", re.M)
        text, count = pattern.subn(rf"\g<1>{key} = {rendered}", text)
        if not count:
            text = text.replace(f"[{section}]\n", f"[{section}]\n{key} = {rendered}\n", 1)
    path = tmp_path / f"{base.stem}-{os.urandom(3).hex()}.toml"
    path.write_text(text)
    load_spec(path)
    return path


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return repr(value)


def reference(spec: Spec, examples: Iterable[Example], windows: Iterable[Window] = ()) -> Any:
    """A model trained once, in process, on what the trainer must learn, in order."""
    model = spec.build_model()
    windows = tuple(windows)
    for ex in examples:
        if any(ex.ts in w for w in windows):
            continue
        if ex.event_id in Holdout(spec.training.holdout_fraction, DEVELOPMENT_KEY):
            continue
        y = ex.label == 1.0 if spec.label.kind == "binary" else ex.label
        model.learn_one(ex.features, y)
    return model


def predictions(spec: Spec, model: Any, examples: Iterable[Example]) -> list[Any]:
    if spec.label.kind == "binary":
        return [model.predict_proba_one(ex.features) for ex in examples]
    return [model.predict_one(ex.features) for ex in examples]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, pause: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def step_until(trainer: Trainer, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trainer.step(0.1)
        value = predicate()
        if value:
            return value
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def store_of(settings: Settings) -> CheckpointStore:
    return CheckpointStore.of(settings)


def newest(settings: Settings, model: str) -> CheckpointManifest | None:
    manifests = store_of(settings).manifests(model)
    return manifests[0] if manifests else None


def spawn_trainer(
    settings: Settings, spec: Path, log: Path, metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    """``loopline run trainer`` as a real process with the test's settings."""
    env = settings.replace(spec=spec, metrics_port=metrics_port).process_env()
    env["PYTHONPATH"] = str(ROOT)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from loopline.cli import main; main()", "run", "trainer"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
