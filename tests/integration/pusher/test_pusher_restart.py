from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loopline.routing import RampState, RampStatus, RoutingStore
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC
from tests.integration.serving.serving_support import (
    announce,
    publish_examples,
    store_of,
    wait_for,
)
from tests.unit.pusher.pusher_support import examples, save, train


def short_ramp_spec(directory: Path) -> Path:
    text = DEFAULT_SPEC.read_text()
    for old, new in (
        ("stages = [1, 5, 25, 50, 100]", "stages = [50, 100]"),
        ("dwell_seconds = 300", "dwell_seconds = 3"),
        ("tolerance = 0.01", "tolerance = 0.1"),
    ):
        assert old in text
        text = text.replace(old, new)
    path = directory / "short_ramp.toml"
    path.write_text(text)
    return path


@contextmanager
def pusher_process(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = settings.process_env()
    command = [sys.executable, "-c", "from loopline.cli import main; main()", "run", "pusher"]
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


def test_a_killed_pusher_resumes_the_ramp_where_it_was(settings: Settings, tmp_path: Path) -> None:
    settings = settings.replace(spec=short_ramp_spec(tmp_path))
    spec = settings.load_spec()
    store = store_of(settings)
    rows = examples(3000, seed=2)
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    champion = save(store, spec, "ck-a", train(spec, rows[:1500]), lineage="a", created_at=earlier)
    other = spec.model_copy(
        update={"model": spec.model.model_copy(update={"params": {"lr": 0.02}})}
    )
    candidate = save(store, spec, "ck-new", train(other, rows), lineage="new")
    publish_examples(settings, examples(spec.qualification.min_holdout, seed=5, holdout=0.1))
    announce(settings, champion, candidate)
    routing = RoutingStore(settings)

    def ramp_where(check: str) -> RampState | None:
        ramp = routing.ramp()
        if ramp is None:
            return None
        ok = {
            "first stage": ramp.status is RampStatus.RAMPING and ramp.stage == 0,
            "promoted": ramp.status is RampStatus.PROMOTED,
        }[check]
        return ramp if ok else None

    log = tmp_path / "pusher.log"
    try:
        with pusher_process(settings, log) as first:
            started = wait_for(lambda: ramp_where("first stage"), "the ramp to start", 60)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        verdict = routing.verdict("ck-new")
        assert verdict is not None and verdict["action"].startswith("ramp: 50%")
        assert routing.ramp() == started
        with pusher_process(settings, log):
            wait_for(lambda: ramp_where("promoted"), "the ramp to finish", 60)
        table = routing.table()
        assert table.champion == "ck-new" and table.checkpoint_ids == ("ck-new",)
        assert routing.verdict("ck-new") == verdict
        assert routing.served() == {"ck-a", "ck-new"}
    except AssertionError:
        print(log.read_text())
        raise
    finally:
        routing.close()
