"""Streams throughput: the full pipeline through one worker beside a bare faust read.

Publishes events, each followed by its label, then measures in the same run:

- ``bare``: a faust agent that only iterates the same two topics (no work at all);
- ``pipeline``: one ``loopline run streams`` worker: validate, dedup, impute, join,
  feature state, examples produced, state committed, features written to Redis.

Both read the same backlog from the start; the rate is events per second from the
first record processed to the last example. Ends with one JSON line, ratio =
pipeline / bare.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import redis

from loopline import accounting
from loopline.devstack import free_port, start_broker
from loopline.kafka import create_topics
from loopline.publisher import Publisher
from loopline.settings import Settings

EVENTS = int(os.environ.get("BENCH_EVENTS", "40000"))
ENTITIES = 1000
GOOD: dict[str, float | int | str | bool | None] = {
    "price": 12.5,
    "hour": 9,
    "device": "mobile",
    "recent_views": 3,
}
BARE = """
import sys, faust, redis
from loopline.settings import Settings
from streams.topology import broker_credentials
bootstrap, prefix, progress = sys.argv[1:4]
app = faust.App(prefix + "bare", broker="kafka://" + bootstrap, store="memory://", web_enabled=False,
                broker_credentials=broker_credentials(Settings.from_env()),
                broker_session_timeout=6.0, broker_heartbeat_interval=0.5, broker_max_poll_interval=300.0,
                consumer_auto_offset_reset="earliest", key_serializer="raw", value_serializer="raw")
topic = app.topic(prefix + "events", prefix + "labels", key_type=bytes, value_type=bytes)
client = redis.Redis()

@app.agent(topic)
async def read(stream):
    n = 0
    async for _ in stream:
        n += 1
        if n % 500 == 0:
            client.set(progress, n)

faust.Worker(app, loglevel="warning").execute_from_commandline()
"""


def settings_for(bootstrap: str, tmp: Path) -> Settings:
    prefix = f"bench{os.getpid()}."
    return Settings.from_env(
        {},
        env="dev",  # the embedded stack and the development keys
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        state_dir=tmp / "state",
        publish_timeout_seconds=30,
    )


def publish(settings: Settings) -> None:
    start = time.perf_counter()
    with Publisher(settings) as pub:
        for i in range(EVENTS):
            entity = f"u{i % ENTITIES}"
            event_id = pub.event(entity, GOOD)
            pub.label(event_id, entity, i % 2)
    print(
        f"published {EVENTS} events and {EVENTS} labels in {time.perf_counter() - start:.1f}s",
        flush=True,
    )


def measure(progress: Callable[[], int], target: int, timeout: float = 120) -> float:
    """Seconds from the first progress seen to ``target``, polling every 50 ms."""
    deadline = time.monotonic() + timeout
    first = None
    last_print = 0.0
    while time.monotonic() < deadline:
        done = progress()
        now = time.monotonic()
        if done and first is None:
            first = (now, done)
        if first is not None and done >= target:
            # Progress is sampled, so credit the records already done when first seen.
            elapsed = now - first[0]
            return float(elapsed * target / max(1, target - first[1]))
        if now - last_print > 2:
            print(f"  {done}/{target}", flush=True)
            last_print = now
        time.sleep(0.05)
    raise SystemExit(f"timed out at {progress()}/{target}")


def counter(client: redis.Redis, key: str) -> int:
    raw = client.get(key)
    return int(raw) if isinstance(raw, bytes | str) else 0


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        broker = start_broker("127.0.0.1", free_port(), tmp / "kafka")
        settings = settings_for(f"127.0.0.1:{broker.port}", tmp)
        client = redis.Redis.from_url(settings.redis_url)
        try:
            create_topics(settings)
            publish(settings)
            env = settings.process_env()  # the bare app logs in as the workers do

            progress_key = settings.key("bench", "bare")
            bare = spawn(
                [
                    sys.executable,
                    "-c",
                    BARE,
                    settings.kafka_bootstrap,
                    settings.topic_prefix,
                    progress_key,
                ],
                env,
                tmp / "bare.log",
            )
            print("bare faust read agent:", flush=True)
            try:
                bare_seconds = measure(lambda: counter(client, progress_key), 2 * EVENTS)
            finally:
                stop(bare)
            bare_rate = EVENTS / bare_seconds
            print(
                f"bare read: {bare_rate:,.0f} events/s ({2 * EVENTS} records in {bare_seconds:.1f}s)",
                flush=True,
            )

            env = settings.process_env()
            code = "from loopline.cli import main; main()"
            pipeline = spawn(
                [sys.executable, "-c", code, "run", "streams"], env, tmp / "streams.log"
            )
            print("full pipeline, one worker:", flush=True)
            try:
                seconds = measure(lambda: accounting.read(settings).get("examples"), EVENTS)
                books = accounting.read(settings)
            except SystemExit:
                print((tmp / "streams.log").read_text()[-3000:])
                raise
            finally:
                stop(pipeline)
            rate = EVENTS / seconds
            print(
                f"pipeline: {rate:,.0f} events/s ({EVENTS} examples in {seconds:.1f}s)", flush=True
            )
            print(
                f"books balance: {books.events_balance == 0 and books.labels_balance == 0}",
                flush=True,
            )
            print(
                orjson.dumps(
                    {
                        "figure": "streams_events_per_second_one_worker",
                        "value": round(rate),
                        "unit": "events/s",
                        "limit": round(bare_rate),
                        "ratio": round(rate / bare_rate, 3),
                    }
                ).decode()
            )
        finally:
            keys = list(client.scan_iter(match=settings.topic_prefix + "*", count=1000))
            keys += list(
                client.scan_iter(
                    match=b"*" + settings.topic_prefix.rstrip(".").encode(), count=1000
                )
            )
            if keys:
                client.delete(*keys)
            client.close()
            broker.stop()


if __name__ == "__main__":
    main()
