"""Freshness: from a label published to serving answering with a model that learned from it.

Runs the whole loop as separate processes (``loopline run streams|trainer|pusher|
serving``) on an embedded broker and the local Redis (unique prefix), with the shipped
spec. The Publisher sends events and their labels at a steady rate; once a second
one labelled event (outside the holdout slice) is a probe. A reader of ``examples``
notes each probe's partition and offset; a poller asks ``/predict`` every 100 ms which
checkpoint answers, and a probe is fresh once that checkpoint's manifest has consumed
past the probe's offset (a checkpoint's offsets are the next offset per partition).
The limit printed beside it is the streams' share measured in the same run: label
published to its example on ``examples``; the rest is snapshot cadence, qualification
and the swap. Goal: p95 <= 30 s.

    .venv/bin/python bench/freshness.py [--seconds 90] [--rate 200]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from loopline.checkpoints import CheckpointStore
from loopline.contracts import Example, Features
from loopline.devstack import free_port, start_broker
from loopline.errors import CheckpointError, RecordError
from loopline.holdout import Holdout
from loopline.kafka import consumer_config, create_topics
from loopline.publisher import Publisher
from loopline.settings import Settings

REDIS = "redis://127.0.0.1:6379/0"
CATEGORIES = ("wool", "cotton", "alpaca", "mohair", "silk", "acrylic", "blend", "unknown")
WORKERS = ("streams", "trainer", "pusher", "serving")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def features(rng: random.Random) -> Features:
    return {
        "price": round(rng.uniform(1, 120), 2),
        "category": rng.choice(CATEGORIES),
        "hour": rng.randrange(24),
        "device": rng.choice(("mobile", "desktop", "tablet")),
        "discount": rng.random() < 0.3,
    }


class Probes:
    """Probe events: when their label left, where their example landed, when a model knew it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.labelled: dict[str, float] = {}
        self.examples: dict[str, tuple[int, int, float]] = {}
        self.fresh: dict[str, float] = {}
        self.first_model_at: float | None = None


def publish(
    settings: Settings, probes: Probes, rate: float, seconds: float, holdout: Holdout
) -> int:
    rng = random.Random(1)
    sent = 0
    next_probe = time.monotonic() + 1
    start = time.monotonic()
    with Publisher(settings, source="bench") as pub:
        while time.monotonic() - start < seconds:
            entity = f"user-{rng.randrange(2000)}"
            x = features(rng)
            event_id = pub.event(entity, x)
            clicked = rng.random() < (0.35 if x["discount"] else 0.08)
            is_probe = time.monotonic() >= next_probe and event_id not in holdout
            pub.label(event_id, entity, clicked)
            if is_probe:
                pub.flush()
                with probes.lock:
                    probes.labelled[event_id] = time.monotonic()
                next_probe += 1
            sent += 1
            time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    return sent


def read_examples(settings: Settings, probes: Probes, stop: threading.Event) -> None:
    topic = settings.topic("examples")
    consumer = Consumer(consumer_config(settings, f"{settings.topic_prefix}bench"))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while not stop.is_set():
            for msg in consumer.consume(1000, 0.1):
                if msg.error() is not None:
                    continue
                try:
                    example = Example.from_json(msg.value() or b"")
                except RecordError:
                    continue
                with probes.lock:
                    if example.event_id in probes.labelled:
                        probes.examples[example.event_id] = (
                            msg.partition() or 0,
                            msg.offset() or 0,
                            time.monotonic(),
                        )
    finally:
        consumer.close()


def poll_serving(settings: Settings, url: str, probes: Probes, stop: threading.Event) -> None:
    store = CheckpointStore.of(settings)
    # Asks only: a logged event would change the probe's own features.
    body = {
        "entity_id": "probe",
        "features": {"price": 10.0, "hour": 9, "device": "mobile"},
        "log": False,
    }
    offsets: dict[int, int] = {}
    version = None
    with httpx.Client(base_url=url, timeout=2) as client:
        while not stop.is_set():
            time.sleep(0.1)
            try:
                answer = client.post("/predict", json=body).json()
            except (httpx.HTTPError, ValueError):
                continue
            if answer.get("fallback") or answer["model_version"] == version:
                continue
            try:
                offsets = store.manifest(answer["model_version"]).offsets
            except CheckpointError:
                continue
            version = answer["model_version"]
            now = time.monotonic()
            with probes.lock:
                if probes.first_model_at is None:
                    probes.first_model_at = now
                for event_id, (partition, offset, _) in probes.examples.items():
                    if event_id not in probes.fresh and offsets.get(partition, 0) > offset:
                        probes.fresh[event_id] = now - probes.labelled[event_id]


def verdict_summary(settings: Settings) -> dict[str, int]:
    client: Any = redis.Redis.from_url(settings.redis_url)
    counts: dict[str, int] = {}
    try:
        for key in client.scan_iter(settings.key("verdict", "*"), count=1000):
            raw = client.get(key)
            verdict = json.loads(raw) if raw else {}
            outcome = verdict.get("verdict", "?")
            if outcome == "refused":
                outcome += ": " + "; ".join(r.split(":")[0] for r in verdict.get("reasons", []))
            counts[outcome] = counts.get(outcome, 0) + 1
    finally:
        client.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker("127.0.0.1", free_port(), Path(tmp) / "kafka")
        port = free_port()
        settings = Settings.from_env(
            {},
            env="dev",  # the embedded stack and the development keys
            kafka_bootstrap=f"{broker.host}:{broker.port}",
            redis_url=REDIS,
            topic_prefix=f"fresh{uuid.uuid4().hex[:8]}.",
            state_dir=Path(tmp) / "state",
            checkpoint_dir=Path(tmp) / "checkpoints",
            serving_port=port,
        )
        env = settings.replace(log_level="WARNING").process_env()
        workers: list[subprocess.Popen[bytes]] = []
        stop = threading.Event()
        try:
            create_topics(settings)
            settings.state_dir.mkdir(parents=True)
            for name in WORKERS:
                log = (Path(tmp) / f"{name}.log").open("wb")
                command = [
                    sys.executable,
                    "-c",
                    "from loopline.cli import main; main()",
                    "run",
                    name,
                ]
                workers.append(
                    subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
                )
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"{url}/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            print(
                f"workers up; publishing {args.rate:g} events/s with labels for {args.seconds:g}s"
            )
            probes = Probes()
            threads = [
                threading.Thread(target=read_examples, args=(settings, probes, stop), daemon=True),
                threading.Thread(
                    target=poll_serving, args=(settings, url, probes, stop), daemon=True
                ),
            ]
            for t in threads:
                t.start()
            holdout = Holdout.of(settings, settings.load_spec().training.holdout_fraction)
            sent = publish(settings, probes, args.rate, args.seconds, holdout)
            print(f"published {sent} events and labels; waiting for the last probes")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(probes.fresh) < len(probes.labelled):
                time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(10)
            with probes.lock:
                # Probes labelled before the first model served measure the cold start.
                since = probes.first_model_at or 0.0
                fresh = [f for e, f in probes.fresh.items() if probes.labelled[e] >= since]
                cold = [f for e, f in probes.fresh.items() if probes.labelled[e] < since]
                streams = [probes.examples[e][2] - probes.labelled[e] for e in probes.examples]
                missing = len(probes.labelled) - len(probes.fresh)
            if not fresh:
                for name in WORKERS:
                    print(
                        f"--- {name} log tail ---\n{(Path(tmp) / f'{name}.log').read_text()[-2000:]}"
                    )
                raise SystemExit("no probe reached serving")
            verdicts = verdict_summary(settings)
            print(f"pusher verdicts: {verdicts}")
            if cold:
                print(
                    f"cold start: {len(cold)} probes labelled before the first model served, max {max(cold):.1f}s"
                )
            p50, p95 = percentile(fresh, 0.5), percentile(fresh, 0.95)
            print(
                f"{len(fresh)} probes fresh ({missing} never reached serving): "
                f"p50 {p50:.1f}s, p95 {p95:.1f}s, max {max(fresh):.1f}s"
            )
            s50, s95 = percentile(streams, 0.5), percentile(streams, 0.95)
            print(f"label -> example on the topic (streams): p50 {s50:.2f}s, p95 {s95:.2f}s")
            print(
                json.dumps(
                    {
                        "figure": "freshness_p95_label_to_serving",
                        "value": round(p95, 2),
                        "unit": "s",
                        "limit": round(s95, 2),
                        "ratio": round(p95 / s95, 1) if s95 else None,
                        "p50_s": round(p50, 2),
                        "probes": len(fresh),
                        "never_fresh": missing,
                    }
                )
            )
        finally:
            stop.set()
            for process in workers:
                process.terminate()
            for process in workers:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
            client = redis.Redis.from_url(REDIS)
            keys = list(client.scan_iter(f"{settings.topic_prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
            broker.stop()


if __name__ == "__main__":
    main()
