"""The pusher, the CLI and the routing store against a Redis that stops answering (SIGSTOP).

Each test owns its redis-server, so it can hang it without disturbing anyone else.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from loopline.cli import app
from loopline.contracts import CommandKind
from loopline.control import make_command, send
from loopline.routing import RoutingStore, serve_only
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from pusher.main import run_until
from pusher.worker import Pusher
from tests.integration.serving.serving_support import (
    hang,
    private_redis,
    record_qualified,
    resume,
    store_of,
    wait_for,
)
from tests.unit.pusher.pusher_support import ConstantModel, save

TIMEOUT = 0.5
#: A call may time out reading, then once more reconnecting; never much more.
BOUND = 3 * TIMEOUT + 0.5


def _serve(settings: Settings, routing: RoutingStore, cid: str) -> None:
    record_qualified(settings, routing, cid)
    routing.update(lambda t, _: (serve_only(t, cid, "test"), None), "test")


def _champion(routing: RoutingStore) -> str | None:
    """The champion, or None while Redis does not answer."""
    try:
        return routing.table().champion
    except redis.RedisError:
        return None


def test_routing_calls_and_the_cli_fail_within_the_timeout(
    settings: Settings, tmp_path: Path
) -> None:
    bounded = settings.replace(redis_timeout_seconds=TIMEOUT)
    with private_redis(bounded, tmp_path / "redis") as (s, server):
        routing = RoutingStore(s)
        _serve(s, routing, "ck-1")
        hang(server)
        try:
            calls = {
                "read": routing.table,
                "update": lambda: routing.update(lambda t, _: (t, None), "test"),
                "kill switch": lambda: routing.set_kill_switch(True, "test", "tester"),
                "a new client": lambda: RoutingStore(s).kill_switch(),
            }
            for name, call in calls.items():
                started = time.monotonic()
                with pytest.raises(redis.TimeoutError):
                    call()
                assert time.monotonic() - started < BOUND, name
            started = time.monotonic()
            result = CliRunner().invoke(
                app, ["killswitch", "on", "--reason", "x"], env=s.process_env({})
            )
            assert time.monotonic() - started < BOUND + 2  # the CLI's own start-up included
            assert result.exit_code == 2, result.output
            assert f"did not answer within {TIMEOUT:g}s" in result.stderr
        finally:
            resume(server)
        assert routing.table().champion == "ck-1"  # the same client works again
        assert not routing.kill_switch().on
        routing.close()


def test_a_command_whose_apply_fails_midway_is_applied_once_redis_is_back(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_spec(DEFAULT_SPEC)
    bounded = settings.replace(redis_timeout_seconds=TIMEOUT)
    with private_redis(bounded, tmp_path / "redis") as (s, server):
        routing = RoutingStore(s)
        for cid in ("ck-1", "ck-2"):
            save(store_of(s), spec, cid, ConstantModel(0.1))
            _serve(s, routing, cid)
        worker = Pusher(s, spec, tick_seconds=0.1)
        checked = worker.routing.verdict
        hung = threading.Event()

        def hang_midway(checkpoint_id: str) -> dict[str, Any] | None:
            # The rollback has read its target; Redis hangs before the change is written.
            if not hung.is_set():
                hung.set()
                hang(server)
                threading.Timer(2.0, resume, (server,)).start()
            return checked(checkpoint_id)

        monkeypatch.setattr(worker.routing, "verdict", hang_midway)
        stop = threading.Event()
        thread = threading.Thread(target=run_until, args=(worker, stop, 1.0), daemon=True)
        thread.start()
        try:
            wait_for(worker.control.ready.is_set, "the pusher to follow control")
            rollback = make_command(CommandKind.ROLLBACK, spec.name, reason="bad day")
            send(s, rollback)
            wait_for(hung.is_set, "the apply to reach Redis")
            wait_for(lambda: _champion(routing) == "ck-1", "the rollback", timeout=40)
            marker = make_command(CommandKind.KILL_SWITCH_ON, spec.name, reason="marker")
            send(s, marker)
            wait_for(lambda: routing.kill_switch().on, "the command after it")
        finally:
            stop.set()
            thread.join(15)
        assert worker.control.applied == ["rolled back to ck-1", "kill switch on"]
        assert routing.command_applied(rollback.command_id)
        assert routing.pinned() == "ck-1"
        routing.close()
