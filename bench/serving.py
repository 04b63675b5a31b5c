"""Serving latency: /predict driven from a second process at a fixed rate, beside the raw loop.

Starts an embedded broker and a Redis of its own (other work on a shared Redis would
show in the tail), trains a model from the shipped spec, writes online features for
the entities, and runs ``loopline run serving`` as its own process. A driver process (this file with
``--drive``) sends requests on a fixed schedule (open loop: latency counts from the
scheduled send time, so a slow answer delays the next ones' numbers too) and reports
p50/p99 and the achieved rate; then a closed-loop run finds the throughput ceiling.
The limit is the in-process loop serving cannot beat, paced at the same rate: one
online feature read from Redis plus one River prediction.
Goal: p99 <= 5 ms at 300 requests/s.

    .venv/bin/python bench/serving.py [--rate 300] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from feature_repo.online import OnlineFeatures
from loopline.checkpoints import CheckpointStore, manifest_sha256
from loopline.contracts import CheckpointManifest
from loopline.devstack import free_port, start_broker, start_redis
from loopline.kafka import create_topics
from loopline.routing import RoutingStore, serve_only
from loopline.scoring import score
from loopline.settings import Settings
from loopline.signing import private_key, sign_verdict
from loopline.validation import FeatureValidator

ENTITIES = 5000
CATEGORIES = ("wool", "cotton", "alpaca", "mohair", "silk", "acrylic", "blend", "unknown")


def request(rng: random.Random) -> dict[str, Any]:
    return {
        "price": round(rng.uniform(1, 120), 2),
        "category": rng.choice(CATEGORIES),
        "hour": rng.randrange(24),
        "device": rng.choice(("mobile", "desktop", "tablet")),
        "recent_views": rng.randrange(30),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# -- the driver (second process) ---------------------------------------------------


class RawClient:
    """A keep-alive HTTP/1.1 client on a bare socket: the driver's own cost stays in the
    tens of microseconds, so the figures are the server's (httpx costs ~0.5 ms a call)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = f"{host}:{port}"

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        header, _, rest = data.partition(b"\r\n\r\n")
        length = int(header.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += self.sock.recv(65536)
        return int(header.split(b" ", 2)[1]), rest

    def close(self) -> None:
        self.sock.close()


def drive(url: str, rate: float, seconds: float, threads: int) -> dict[str, float]:
    """Open loop when ``rate`` > 0 (each thread paces rate/threads), else closed loop."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    start = time.perf_counter() + 0.2

    def worker(index: int) -> None:
        nonlocal errors
        rng = random.Random(index)
        bodies = [
            json.dumps(
                {"entity_id": f"user-{rng.randrange(ENTITIES)}", "features": request(rng)}
            ).encode()
            for _ in range(1000)
        ]
        mine: list[float] = []
        failed = 0
        client = RawClient(host, int(port))
        i = 0
        while True:
            scheduled = start + (i * threads + index) / rate if rate > 0 else time.perf_counter()
            if scheduled - start > seconds:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            status, reply = client.post("/predict", bodies[i % len(bodies)])
            mine.append((time.perf_counter() - scheduled) * 1000)
            failed += status != 200 or b'"fallback":true' in reply
            i += 1
        client.close()
        with lock:
            latencies.extend(mine)
            errors += failed

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "errors": errors,
        "rate": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
    }


# -- the bench ---------------------------------------------------------------------


def prepare(settings: Settings) -> tuple[Any, OnlineFeatures]:
    spec = settings.load_spec()
    rng = random.Random(1)
    model = spec.build_model()
    validator = FeatureValidator(spec)
    for _ in range(5000):
        features, _ = validator.validate(request(rng), impute=True)
        rate = rng.random() * 0.3
        x = features | {"click_rate_24h": rate, "impressions_1h": rng.randrange(20)}
        model.learn_one(x, rng.random() < 0.1 + rate)
    store = CheckpointStore.of(settings, signing=True)
    manifest = CheckpointManifest(
        "bench-ck", None, spec.name, spec.spec_version, spec.schema_hash, {}, None, None,
        5000, 0, (), {}, "", datetime.now(UTC), "bench",
    )  # fmt: skip
    signed = store.save(manifest, model)
    routing = RoutingStore(settings)
    verdict = {
        "checkpoint_id": "bench-ck",
        "manifest_sha256": manifest_sha256(signed),
        "verdict": "qualified",
        "decided_at": datetime.now(UTC).isoformat(),
    }
    routing.record_verdict("bench-ck", sign_verdict(verdict, private_key(settings, "pusher")))
    routing.update(lambda t, _: (serve_only(t, "bench-ck", "bench"), None), "bench")
    routing.close()
    online = OnlineFeatures(settings, spec)
    now = datetime.now(UTC)
    rows = [
        (
            f"user-{i}",
            {"impressions_1h": i % 20, "click_rate_24h": (i % 30) / 100, "seconds_since_last": 60},
            now,
        )
        for i in range(ENTITIES)
    ]
    for i in range(0, len(rows), 500):
        online.write(rows[i : i + 500])
    return model, online


def in_process_limit(
    settings: Settings, model: Any, online: OnlineFeatures, rate: float, seconds: float
) -> dict[str, float]:
    """One Redis feature read and one River prediction per call, at the same pace as the
    HTTP run (an idle gap between calls costs wake-ups a tight loop would hide)."""
    spec = settings.load_spec()
    validator = FeatureValidator(spec)
    rng = random.Random(2)
    latencies = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        started = time.perf_counter()
        features, _ = validator.validate(request(rng), impute=True)
        entity = online.read([f"user-{rng.randrange(ENTITIES)}"])[0]
        score(model, entity | features, "binary")
        latencies.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99)}


def server_histogram(url: str) -> dict[float, float]:
    """Cumulative counts of serving's own request-time histogram, by bucket bound (s)."""
    counts = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("loopline_serving_request_seconds_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            counts[float(bound)] = float(line.rsplit(" ", 1)[1])
    return counts


def server_p99_bound(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest bucket bound (ms) holding 99% of the requests between two scrapes."""
    total = after[float("inf")] - before.get(float("inf"), 0)
    for bound in sorted(after):
        if after[bound] - before.get(bound, 0) >= 0.99 * total:
            return bound * 1000
    return float("inf")


def run_driver(url: str, rate: float, seconds: float, threads: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--drive",
            url,
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--threads",
            str(threads),
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drive")
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    if args.drive:
        print(json.dumps(drive(args.drive, args.rate, args.seconds, args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker("127.0.0.1", free_port(), Path(tmp) / "kafka")
        own_redis = start_redis("127.0.0.1", free_port(), Path(tmp) / "redis")
        port = free_port()
        settings = Settings.from_env(
            {},
            env="dev",  # the embedded stack and the development keys
            kafka_bootstrap=f"{broker.host}:{broker.port}",
            redis_url=f"redis://127.0.0.1:{own_redis.port}/0",
            topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
            state_dir=Path(tmp) / "state",
            checkpoint_dir=Path(tmp) / "checkpoints",
            serving_port=port,
        )
        server = None
        try:
            create_topics(settings)
            model, online = prepare(settings)
            env = settings.replace(log_level="WARNING").process_env()
            server = subprocess.Popen(
                [sys.executable, "-c", "from loopline.cli import main; main()", "run", "serving"],
                env=env,
            )
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/healthz").json()["routes"]:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            limit = in_process_limit(settings, model, online, args.rate, 10)
            print(
                f"in-process limit at {args.rate:g}/s (Redis read + River predict): p50 {limit['p50_ms']:.3f} ms, p99 {limit['p99_ms']:.3f} ms"
            )
            run_driver(url, args.rate, 2, args.threads)  # warm up
            before = server_histogram(url)
            paced = run_driver(url, args.rate, args.seconds, args.threads)
            inside = server_p99_bound(before, server_histogram(url))
            print(
                f"/predict at {args.rate:g} req/s for {args.seconds:g}s: {paced['requests']} requests, "
                f"{paced['errors']} errors, {paced['rate']:.0f} req/s, p50 {paced['p50_ms']:.2f} ms, p99 {paced['p99_ms']:.2f} ms"
            )
            print(f"inside the server (its own histogram): p99 <= {inside:g} ms")
            ceiling = run_driver(url, 0, 8, args.threads)
            print(
                f"/predict closed loop, {args.threads} clients: {ceiling['rate']:.0f} req/s, "
                f"p50 {ceiling['p50_ms']:.2f} ms, p99 {ceiling['p99_ms']:.2f} ms, {ceiling['errors']} errors"
            )
            online.close()
            figure = {
                "figure": f"serving_p99_at_{args.rate:g}_rps",
                "value": round(paced["p99_ms"], 3),
                "unit": "ms",
                "limit": round(limit["p99_ms"], 3),
                "ratio": round(paced["p99_ms"] / limit["p99_ms"], 2),
                "p50_ms": round(paced["p50_ms"], 3),
                "rate": round(paced["rate"], 1),
                "errors": paced["errors"],
                "max_rate": round(ceiling["rate"], 1),
                "server_p99_bucket_ms": inside,
                "limit_p50_ms": round(limit["p50_ms"], 3),
            }
            print(json.dumps(figure))
        finally:
            if server is not None:
                server.terminate()
                server.wait(20)
            own_redis.stop()
            broker.stop()


if __name__ == "__main__":
    main()
