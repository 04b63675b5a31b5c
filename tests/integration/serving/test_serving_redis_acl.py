"""Serving as compose runs it against Redis: the ``serving`` ACL user from
docker-compose.yml is enough to serve, and not enough to change what is served."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from loopline.devstack import free_port
from loopline.heartbeat import worker_key
from loopline.routing import RoutingStore, serve_only
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from tests.integration.serving.serving_support import (
    ROOT,
    record_qualified,
    serving_process,
    store_of,
    wait_for,
)
from tests.unit.pusher.pusher_support import examples, save, train

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PASSWORDS = {
    "LOOPLINE_REDIS_PASSWORD": "admin-secret",
    "LOOPLINE_REDIS_SERVING_PASSWORD": "serving-secret",
}
#: Overrides of compose's arguments for a throwaway server on the test's loopback.
LOCAL = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
REQUEST = {
    "entity_id": "u1",
    "features": {"price": 20.0, "category": "alpaca", "hour": 9, "device": "mobile"},
}


def _redis_7() -> str | None:
    """A redis-server that knows read/write key selectors (7.0+), if installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"v=(\d+)\.", out)
    return binary if found and int(found.group(1)) >= 7 else None


def _compose_redis_args(prefix: str) -> list[str]:
    """Compose's redis-server arguments, secrets filled in, keys under the test's prefix."""
    compose_prefix = COMPOSE["x-loopline"]["environment"]["LOOPLINE_TOPIC_PREFIX"]
    args = []
    for arg in COMPOSE["services"]["redis"]["command"][1:]:
        arg = re.sub(r"\$\{([A-Z_]+):\?[^}]+\}", lambda m: PASSWORDS[m.group(1)], str(arg))
        args.append(arg.replace(f"~{compose_prefix}", f"~{prefix}"))
    return args


@pytest.mark.skipif(_redis_7() is None, reason="needs redis-server 7 or later for key selectors")
def test_serving_runs_as_the_compose_redis_user_which_cannot_route(
    settings: Settings, tmp_path: Path
) -> None:
    binary = _redis_7()
    assert binary is not None
    port = free_port()
    server = subprocess.Popen(
        [binary, *_compose_redis_args(settings.topic_prefix), "--port", str(port), *LOCAL],
        stdout=subprocess.DEVNULL,
    )
    admin = redis.Redis(port=port, password=PASSWORDS["LOOPLINE_REDIS_PASSWORD"])
    try:
        wait_for(lambda: _pings(admin), "redis to start")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).get("anything")
        spec = load_spec(DEFAULT_SPEC)
        save(store_of(settings), spec, "ck-a", train(spec, examples(500, seed=3)))
        pusher_url = f"redis://:{PASSWORDS['LOOPLINE_REDIS_PASSWORD']}@127.0.0.1:{port}/0"
        routing = RoutingStore(settings.replace(redis_url=pusher_url))
        record_qualified(settings, routing, "ck-a")
        routing.update(lambda t, _: (serve_only(t, "ck-a", "test"), None), "test")
        routing.close()
        url = f"redis://serving:{PASSWORDS['LOOPLINE_REDIS_SERVING_PASSWORD']}@127.0.0.1:{port}/0"
        run = settings.replace(redis_url=url, serving_port=free_port())
        log = tmp_path / "serving.log"
        with (
            serving_process(run, log),
            httpx.Client(base_url=f"http://127.0.0.1:{run.serving_port}", timeout=10) as client,
        ):
            key = worker_key(run, f"serving.{os.uname().nodename}-{run.serving_port}")
            wait_for(lambda: admin.get(key), "serving's heartbeat", timeout=90)
            # It reads routing, the verdict and online features as that user.
            wait_for(lambda: client.get("/healthz").status_code == 200, "serving to be ready")
            answer = client.post("/predict", json=REQUEST).json()
        assert (answer["model_version"], answer["fallback"]) == ("ck-a", False), answer
        assert "NOPERM" not in log.read_text()
        serving_user = redis.Redis.from_url(url)
        for write in (
            lambda: serving_user.set(run.key("routing"), b"{}"),
            lambda: serving_user.set(run.key("verdict", "ck-1"), b'{"verdict": "qualified"}'),
            lambda: serving_user.delete(run.key("kill_switch")),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                write()
    finally:
        server.terminate()
        server.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
