"""Faults injected into real worker processes, long runs: what was lost, emitted twice,
learned twice, and how long the loop took to account for every event afterwards.

Runs the scenarios of ``tests/faults/`` (see ``tests/faults/scenarios.py``) at bench
size on a broker of its own (and the Redis at ``LOOPLINE_REDIS_URL``, else one of its
own): ten SIGKILLs over 20,000 events, a worker SIGSTOPped past its session timeout,
Redis hung and killed, the broker cut off for up to two minutes, poison on every
topic, a backfill published again, two trainers for one model, a labeller's clock a
minute ahead, the broker restarted empty. ``BENCH_FAULTS=kill,poison`` picks some.

Prints each scenario's figures as it goes and ends with one JSON line whose value is
lost + emitted twice + learned twice over every scenario; the limit is 0, so the
ratio is the value itself (0 means clean).
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

from loopline.devstack import free_port, redis_answers, start_broker, start_redis
from loopline.kafka import create_topics
from loopline.settings import Settings

if __package__ in (None, ""):  # run as a script: the scenarios live in the repository's tests
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import scenarios
from tests.faults.harness import Figures

LOCAL_REDIS = "redis://127.0.0.1:6379/0"

Run = Callable[[Settings, Path], Figures]
LONG: dict[str, Run] = {
    "kill": lambda s, d: scenarios.kill_streams(s, d, events=20_000, kills=10),
    "sigstop": lambda s, d: scenarios.pause_streams(s, d, events=10_000, paused_s=20.0),
    "redis": lambda s, d: scenarios.redis_faults(s, d, events=10_000, hung_s=30.0, down_s=15.0),
    "broker_cut": lambda s, d: scenarios.broker_cut(s, d, events=10_000, cut_s=120.0),
    "poison": lambda s, d: scenarios.poison(s, d, per_topic=20_000, good=5_000),
    "backfill": lambda s, d: scenarios.backfill_again(s, d, events=10_000),
    "two_trainers": lambda s, d: scenarios.two_trainers(s, d, events=10_000),
    "clock_ahead": lambda s, d: scenarios.clock_ahead(s, d, events=10_000, ahead_s=60.0),
    "broker_empty": lambda s, d: scenarios.broker_restarted_empty(s, d, events=5_000),
}


def _redis(tmp: Path) -> tuple[str, Callable[[], object]]:
    url = os.environ.get("LOOPLINE_REDIS_URL", LOCAL_REDIS)
    if redis_answers(url):
        return url, lambda: None
    server = start_redis("127.0.0.1", free_port(), tmp / "redis")
    return f"redis://127.0.0.1:{server.port}/0", lambda: server.stop()


def _drop_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    with client:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        keys += list(client.scan_iter(match=b"*" + prefix.rstrip(".").encode(), count=1000))
        if keys:
            client.delete(*keys)


HEADLINE = ("lost", "emitted_twice", "learned_twice", "recovery_s")


def _line(row: dict[str, Any]) -> str:
    head = ", ".join(f"{k} {row[k]}" for k in HEADLINE if k in row)
    rest = {k: v for k, v in row.items() if k not in HEADLINE}
    return f"{head}  {orjson.dumps(rest, default=str).decode()}"


def main() -> None:
    wanted = [n for n in os.environ.get("BENCH_FAULTS", ",".join(LONG)).split(",") if n]
    rows: dict[str, dict[str, Any]] = {}
    total = 0
    with tempfile.TemporaryDirectory(prefix="loopline-bench-faults-") as name:
        tmp = Path(name)
        redis_url, stop_redis = _redis(tmp)
        try:
            for scenario in wanted:
                # A broker per scenario: the embedded one never frees what it held.
                broker = start_broker("127.0.0.1", free_port(), tmp / f"kafka-{scenario}")
                directory = tmp / scenario
                prefix = f"bf{uuid.uuid4().hex[:8]}."
                settings = Settings.from_env(
                    {},
                    env="dev",  # the embedded stack and the development keys
                    kafka_bootstrap=f"127.0.0.1:{broker.port}",
                    redis_url=redis_url,
                    topic_prefix=prefix,
                    state_dir=directory / "state",
                    checkpoint_dir=directory / "checkpoints",
                    publish_timeout_seconds=30,
                )
                print(f"{scenario}:", flush=True)
                started = time.monotonic()
                try:
                    create_topics(settings)
                    figures = LONG[scenario](settings, directory)
                    row = figures.row()
                    total += figures.total
                except Exception as exc:  # a scenario that could not run is reported, not hidden
                    traceback.print_exc()
                    row = {"error": f"{type(exc).__name__}: {exc}"}
                finally:
                    broker.stop()
                    _drop_keys(redis_url, prefix)
                row["seconds"] = round(time.monotonic() - started, 1)
                rows[scenario] = row
                print(f"  {_line(row)}", flush=True)
        finally:
            stop_redis()
    print(
        orjson.dumps(
            {
                "figure": "faults",
                "value": total,
                "unit": "records",
                "limit": 0,
                "ratio": total,  # the limit is 0: the ratio is the value (0 means clean)
                "scenarios": rows,
                "not_run": [n for n, r in rows.items() if "error" in r],
            },
            default=str,
        ).decode(),
        flush=True,
    )


if __name__ == "__main__":
    main()
