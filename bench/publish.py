"""Publisher throughput beside raw confluent-kafka produce, in the same run.

Both sides send the same number of yarn-shop events, keyed by entity, to a fresh
embedded broker with the same producer settings (idempotent, acks=all); the raw side
produces pre-encoded records, the SDK side validates, stamps and encodes each event.
Run: .venv/bin/python bench/publish.py [--events N]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer

from loopline.devstack import free_port, start_broker
from loopline.kafka import create_topics, producer_config
from loopline.publisher import Publisher
from loopline.settings import Settings

CATEGORIES = ["wool", "cotton", "alpaca", "mohair", "silk", "acrylic", "blend"]


def sample_features(rng: random.Random) -> dict[str, object]:
    return {
        "price": round(rng.uniform(2, 80), 2),
        "category": rng.choice(CATEGORIES),
        "hour": rng.randrange(24),
        "device": rng.choice(["mobile", "desktop", "tablet"]),
        "recent_views": rng.randrange(30),
        "discount": rng.random() < 0.2,
    }


def raw_run(settings: Settings, records: list[tuple[bytes, bytes]]) -> float:
    producer = Producer(producer_config(settings))
    topic = settings.topic("events")
    start = time.perf_counter()
    for i, (key, value) in enumerate(records):
        try:
            producer.produce(topic, value, key)
        except BufferError:
            producer.poll(0.05)
            producer.produce(topic, value, key)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return len(records) / (time.perf_counter() - start)


def sdk_run(settings: Settings, rows: list[tuple[str, dict[str, object]]]) -> float:
    start = time.perf_counter()
    with Publisher(settings, source="bench") as pub:
        for entity, features in rows:
            pub.event(entity, features)  # type: ignore[arg-type]
    return len(rows) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker("127.0.0.1", free_port(), Path(tmp))
        try:
            settings = Settings.from_env(
                {}, kafka_bootstrap=f"127.0.0.1:{broker.port}", topic_prefix="bench."
            )
            create_topics(settings)
            rng = random.Random(7)
            rows = [
                (f"user-{rng.randrange(5000)}", sample_features(rng)) for _ in range(args.events)
            ]
            records = [
                (
                    e.encode(),
                    json.dumps(
                        {
                            "event_id": f"{i:032x}",
                            "entity_id": e,
                            "ts": "2026-11-22T10:00:00+00:00",
                            "features": f,
                            "source": "bench",
                            "schema_version": 1,
                        }
                    ).encode(),
                )
                for i, (e, f) in enumerate(rows)
            ]
            raw_best = sdk_best = 0.0
            for round_ in range(1, args.rounds + 1):
                raw = raw_run(settings, records)
                sdk = sdk_run(settings, rows)
                raw_best, sdk_best = max(raw_best, raw), max(sdk_best, sdk)
                print(
                    f"round {round_}: raw produce {raw:,.0f} events/s, Publisher {sdk:,.0f} events/s "
                    f"({sdk / raw:.0%})",
                    flush=True,
                )
        finally:
            broker.stop()
    print(
        json.dumps(
            {
                "figure": "publisher_throughput",
                "value": round(sdk_best),
                "unit": "events/s",
                "limit": round(raw_best),
                "ratio": round(sdk_best / raw_best, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
