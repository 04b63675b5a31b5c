"""One trainer per model version: the lease in Redis, against real trainer processes.

A second trainer for the same model version refuses to start and names the holder;
a trainer paused past the lease TTL and taken over writes no checkpoint after the
takeover and exits, and no example is learned twice across the lineage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from loopline.contracts import CheckpointManifest
from loopline.errors import LeaseHeld, LeaseLost
from loopline.holdout import DEVELOPMENT_KEY, Holdout
from loopline.lease import Lease, lease_key, trainer_lease_name
from loopline.settings import Settings
from loopline.signing import private_key
from loopline.spec import load_spec
from tests.integration.trainer.trainer_support import (
    newest,
    publish,
    spawn_trainer,
    spec_file,
    store_of,
    wait_for,
)
from tests.unit.trainer.trainer_data import make_examples
from trainer.main import LEASE_EXIT_STATUS
from trainer.state import load_state

TTL = 2.0
TOTAL = 24_000


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def lease_settings(settings: Settings) -> Settings:
    return settings.replace(trainer_lease_seconds=TTL)


@pytest.fixture
def recorder_spec(tmp_path: Path) -> Path:
    return spec_file(
        tmp_path,
        model__factory="tests.integration.trainer.trainer_recorder:recorder",
        model__params={},
        training__snapshot_every_examples=500,
        training__snapshot_every_seconds=0.2,
        training__keep_checkpoints=100_000,
    )


def test_a_lease_has_one_holder_renewed_and_released_by_token(settings: Settings) -> None:
    first, second = Lease(settings, "role", TTL), Lease(settings, "role", TTL)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        holder = first.acquire()
        with pytest.raises(LeaseHeld) as refused:
            second.acquire(wait=0.3)
        assert refused.value.holder == holder
        assert f"{socket.gethostname()} pid {os.getpid()} since" in str(refused.value)
        time.sleep(TTL / 2)
        first.keep()  # due: renewed to a whole TTL again
        assert int(client.pttl(lease_key(settings, "role"))) > TTL * 1000 * 0.9
        # Gone past its TTL (as if paused) and taken: it can neither renew nor release.
        client.delete(lease_key(settings, "role"))
        taken = second.acquire()
        with pytest.raises(LeaseLost, match="was lost: now held by"):
            first.confirm()
        assert not first.held
        with pytest.raises(LeaseLost, match="was lost"):
            first.keep()
        assert not first.release()
        assert second.current() == taken
        assert second.release()
        assert client.get(lease_key(settings, "role")) is None
    finally:
        first.close()
        second.close()
        client.close()


def test_a_second_trainer_for_the_model_version_refuses_and_names_the_holder(
    lease_settings: Settings, recorder_spec: Path, tmp_path: Path
) -> None:
    spec = load_spec(recorder_spec)
    examples = make_examples(spec, 4000, serial=True)
    publish(lease_settings, examples[:2000], partition=0)
    first = spawn_trainer(lease_settings, recorder_spec, tmp_path / "first.log")
    try:
        wait_for(
            lambda: (m := newest(lease_settings, spec.name)) and m.offsets.get(0) == 2000,
            90,
            "the first trainer's checkpoint of 2000",
        )
        second_log = tmp_path / "second.log"
        second = spawn_trainer(lease_settings, recorder_spec, second_log)
        try:
            assert second.wait(60) == LEASE_EXIT_STATUS
        finally:
            stop(second)
        said = second_log.read_text()
        name = trainer_lease_name(spec.name, spec.spec_version)
        holder = f"lease {name} is held by {socket.gethostname()} pid {first.pid} since"
        assert f"not starting: {holder}" in said, said
        # The holder never noticed: it keeps training, alone.
        publish(lease_settings, examples[2000:], partition=0)
        wait_for(
            lambda: (m := newest(lease_settings, spec.name)) and m.offsets.get(0) == 4000,
            90,
            "the first trainer's checkpoint of all 4000",
        )
        assert first.poll() is None
    finally:
        stop(first)
    assert first.returncode == 0
    manifests = store_of(lease_settings).manifests(spec.name)
    assert len({m.lineage for m in manifests}) == 1
    _, model = store_of(lease_settings).load(manifests[0].checkpoint_id)
    expected = [
        ex.event_id
        for ex in examples
        if ex.event_id not in Holdout(spec.training.holdout_fraction, DEVELOPMENT_KEY)
    ]
    assert model.learned == expected
    with redis.Redis.from_url(lease_settings.redis_url) as client:
        assert client.get(lease_key(lease_settings, name)) is None  # released on SIGTERM


def chain(manifests: list[CheckpointManifest]) -> list[CheckpointManifest]:
    """The checkpoints as one line from the first to the newest; fails on a fork."""
    children: dict[str | None, list[CheckpointManifest]] = {}
    for m in manifests:
        children.setdefault(m.parent_id, []).append(m)
    forks = {p: [c.checkpoint_id for c in cs] for p, cs in children.items() if len(cs) > 1}
    assert not forks, f"checkpoints with one parent: {forks}"
    line, parent = [], None
    while parent in children or not line:
        (child,) = children[parent]
        line.append(child)
        parent = child.checkpoint_id
    assert len(line) == len(manifests)
    return line


def test_a_trainer_paused_past_its_lease_is_taken_over_and_writes_nothing_after(
    lease_settings: Settings, recorder_spec: Path, tmp_path: Path
) -> None:
    spec = load_spec(recorder_spec)
    examples = make_examples(spec, TOTAL, serial=True)
    publish(lease_settings, examples, partition=0)
    store = store_of(lease_settings)
    name = trainer_lease_name(spec.name, spec.spec_version)
    first_log = tmp_path / "first.log"
    first = spawn_trainer(lease_settings, recorder_spec, first_log)
    second = None
    watcher = Lease(lease_settings, name, TTL)
    try:
        wait_for(
            lambda: (m := newest(lease_settings, spec.name)) and sum(m.offsets.values()) > 3000,
            90,
            "the first trainer's checkpoints past 3000",
            pause=0.005,
        )
        os.kill(first.pid, signal.SIGSTOP)
        before = {m.checkpoint_id for m in store.manifests(spec.name)}
        time.sleep(TTL + 0.5)
        second = spawn_trainer(lease_settings, recorder_spec, tmp_path / "second.log")
        wait_for(
            lambda: (h := watcher.current()) is not None and h.pid == second.pid,
            60,
            "the second trainer to take the lease",
        )
        taken_over = {m.checkpoint_id for m in store.manifests(spec.name)}
        os.kill(first.pid, signal.SIGCONT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            first.wait(30)
        # Had the first written after the takeover, its checkpoint would share a parent
        # with the second's first one (both continue the first's last checkpoint).
        chain(store.manifests(spec.name))
        assert first.returncode == LEASE_EXIT_STATUS
        wait_for(
            lambda: (m := newest(lease_settings, spec.name)) and sum(m.offsets.values()) == TOTAL,
            180,
            "the second trainer to checkpoint the whole stream",
        )
    finally:
        stop(first)
        if second is not None:
            stop(second)
        watcher.close()
    assert second.returncode == 0
    said = first_log.read_text()
    assert "stopping without a checkpoint" in said and f"pid {second.pid}" in said, said
    line = chain(store.manifests(spec.name))
    ids = [m.checkpoint_id for m in line]
    assert taken_over == before
    assert set(ids[: len(before)]) == before
    assert {m.lineage for m in line} == {line[0].lineage}
    key = private_key(lease_settings, "trainer")
    writers = {
        i: (load_state(lease_settings.checkpoint_dir, i, key) or {})["writer"]["pid"] for i in ids
    }
    assert {i for i, pid in writers.items() if pid == first.pid} == before
    assert {i for i, pid in writers.items() if pid == second.pid} == set(ids) - before
    _, model = store.load(ids[-1])
    expected = [
        ex.event_id
        for ex in examples
        if ex.event_id not in Holdout(spec.training.holdout_fraction, DEVELOPMENT_KEY)
    ]
    assert model.learned == expected  # each once, in order: none twice, none skipped
