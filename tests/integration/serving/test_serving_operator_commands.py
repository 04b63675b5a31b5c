from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.contracts import CommandKind
from loopline.control import read_all
from loopline.routing import RampStatus, RoutingStore, serve_only, split
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from pusher.ramp import start
from tests.integration.serving.serving_support import record_qualified, store_of
from tests.unit.pusher.pusher_support import ConstantModel, save


@pytest.fixture
def routing(settings: Settings) -> RoutingStore:
    store = RoutingStore(settings)
    yield store  # type: ignore[misc]
    store.close()


def loopline(settings: Settings, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), env=settings.to_env())
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result.output


def test_rollback_pin_and_kill_switch(settings: Settings, routing: RoutingStore) -> None:
    spec = load_spec(DEFAULT_SPEC)
    store = store_of(settings)
    for cid in ("ck-1", "ck-2", "ck-bad"):
        save(store, spec, cid, ConstantModel(0.1))
        record_qualified(settings, routing, cid)
    blob = Path(settings.checkpoint_dir) / "ck-bad.model"
    blob.write_bytes(blob.read_bytes() + b"x")
    for cid in ("ck-1", "ck-2"):
        routing.update(lambda t, _, c=cid: (serve_only(t, c, "test"), None), "test")  # type: ignore[misc]

    loopline(settings, "rollback", "--reason", "bad numbers")
    assert routing.table().champion == "ck-1" and routing.pinned() == "ck-1"
    assert "bad numbers" in routing.table().reason
    assert "sha256" in loopline(settings, "pin", "ck-bad", "--reason", "x", code=1)
    loopline(settings, "pin", "ck-2", "--reason", "known good")
    assert routing.table().checkpoint_ids == ("ck-2",) and routing.pinned() == "ck-2"
    loopline(settings, "unpin")
    assert routing.pinned() is None

    loopline(settings, "killswitch", "on", "--reason", "incident 7")
    assert routing.kill_switch().on and routing.kill_switch().reason == "incident 7"
    loopline(settings, "killswitch", "off", "--reason", "over")
    assert not routing.kill_switch().on
    output = loopline(settings, "routes")
    assert "ck-2" in str(output) and "kill switch: off" in str(output)


def test_ramp_pause_resume_abort(settings: Settings, routing: RoutingStore) -> None:
    spec = load_spec(DEFAULT_SPEC)
    assert "no ramp in progress" in loopline(settings, "ramp", "pause", "--reason", "x", code=1)
    ramp = start(spec, "ck-new", "ck-old")
    routing.update(lambda t, _: (split(t, "ck-new", "ck-old", ramp.percent, "test"), ramp), "test")
    loopline(settings, "ramp", "pause", "--reason", "look closer")
    assert routing.ramp().status is RampStatus.PAUSED  # type: ignore[union-attr]
    loopline(settings, "ramp", "resume", "--reason", "fine")
    assert routing.ramp().status is RampStatus.RAMPING  # type: ignore[union-attr]
    loopline(settings, "ramp", "abort", "--reason", "not today")
    assert routing.ramp().status is RampStatus.ABORTED  # type: ignore[union-attr]
    assert routing.table().checkpoint_ids == ("ck-old",)
    assert "no ramp in progress" in loopline(settings, "ramp", "resume", "--reason", "x", code=1)
    kinds = [c.kind for c in read_all(settings)]
    assert kinds == [CommandKind.PAUSE_RAMP, CommandKind.RESUME_RAMP, CommandKind.ABORT_RAMP]


def test_a_second_rollback_goes_further_back(settings: Settings, routing: RoutingStore) -> None:
    spec = load_spec(DEFAULT_SPEC)
    store = store_of(settings)
    for cid in ("ck-0", "ck-1", "ck-2"):
        save(store, spec, cid, ConstantModel(0.1))
        record_qualified(settings, routing, cid)
        routing.update(lambda t, _, c=cid: (serve_only(t, c, "test"), None), "test")  # type: ignore[misc]
    loopline(settings, "rollback", "--reason", "ck-2 is bad")
    assert routing.table().champion == "ck-1"
    loopline(settings, "rollback", "--reason", "ck-1 too")
    assert routing.table().champion == "ck-0", "a rollback must not bring back what it rolled away"
    assert "no earlier champion" in loopline(settings, "rollback", "--reason", "x", code=1)
