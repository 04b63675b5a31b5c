"""Trainer throughput end to end beside River's own loop, in the same run.

The trainer consumes yarn-shop Examples from a fresh embedded broker (3 partitions),
decodes them, learns test-then-train (predict, score log loss / ROC AUC / accuracy
overall and per window, learn) with the holdout slice and periodic signed
checkpoints, exactly as ``loopline run trainer`` does. The limit is River's
progressive-validation loop over the same examples, already in memory as ``(x, y)``:
predict_proba_one, the same three metrics (River's), learn_one except on the holdout
slice (which the trainer scores but never learns). The two run interleaved, batch
for batch, so that both see the same load on a shared machine. River's bare
learn_one loop is printed for reference.
Run: .venv/bin/python bench/trainer.py [--examples N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Producer
from river import metrics

from loopline.contracts import Example, Features
from loopline.devstack import free_port, start_broker
from loopline.holdout import DEVELOPMENT_KEY, Holdout
from loopline.kafka import create_topics, producer_config
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, Spec, load_spec

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def examples(spec: Spec, n: int) -> list[Example]:
    rng = random.Random(7)
    categories = spec.features["category"].categories or ("unknown",)
    out = []
    for i in range(n):
        discount, views, rate = rng.random() < 0.25, rng.randrange(40), round(rng.random() * 0.2, 4)
        x: Features = {
            "price": round(rng.uniform(1, 120), 2),
            "category": rng.choice(categories),
            "hour": rng.randrange(24),
            "device": rng.choice(("mobile", "desktop", "tablet")),
            "recent_views": views,
            "discount": discount,
            "impressions_1h": rng.randrange(20),
            "click_rate_24h": rate,
            "seconds_since_last": round(rng.uniform(0, 3600), 1),
        }
        p = 0.03 + 0.08 * discount + 0.002 * views + rate / 2
        ts = T0 + timedelta(seconds=i)
        out.append(Example(f"e{i}", f"u{i % 5000}", ts, x, float(rng.random() < p), label_ts=ts))
    return out


def publish(settings: Settings, records: list[Example]) -> float:
    producer = Producer(producer_config(settings))
    topic = settings.topic("examples")
    start = time.perf_counter()
    for i, ex in enumerate(records):
        try:
            producer.produce(topic, ex.to_json(), ex.entity_id.encode())
        except BufferError:
            producer.poll(0.05)
            producer.produce(topic, ex.to_json(), ex.entity_id.encode())
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return time.perf_counter() - start


class RiverLoop:
    """River's loop doing the trainer's work, in slices: every example scored with the
    same three metrics (River's), learned unless it is in the holdout slice."""

    def __init__(self, spec: Spec, records: list[Example]) -> None:
        holdout = Holdout(spec.training.holdout_fraction, DEVELOPMENT_KEY)  # the trainer's, in dev
        self.data = [(ex.features, ex.label == 1.0, ex.event_id in holdout) for ex in records]
        self.model = spec.build_model()
        self.metrics = (metrics.LogLoss(), metrics.ROCAUC(), metrics.Accuracy())  # type: ignore[no-untyped-call]
        self.done = 0

    def run(self, count: int) -> None:
        model, (log_loss, auc, acc) = self.model, self.metrics
        for x, y, held_out in self.data[self.done : self.done + count]:
            proba = model.predict_proba_one(x)
            log_loss.update(y, proba)
            auc.update(y, proba)  # type: ignore[no-untyped-call]
            acc.update(y, max(proba, key=proba.get))
            if not held_out:
                model.learn_one(x, y)
        self.done += count


def paired_run(settings: Settings, spec: Spec, records: list[Example]) -> dict[str, float]:
    """Alternate one trainer step and River's loop over as many examples, timing each:
    both sides see the same load on a shared machine. The trainer's clock starts at
    its first batch (after the group join) and includes the final checkpoint."""
    # This file is named like the package it measures: take bench/ off the import path.
    here = Path(__file__).parent.resolve()
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    from trainer.core import Trainer

    n = len(records)
    river = RiverLoop(spec, records)
    trainer = Trainer(settings, spec)
    trainer.start()
    wall = {"trainer": 0.0, "river": 0.0}
    cpu = {"trainer": 0.0, "river": 0.0}
    try:
        deadline = time.monotonic() + 180
        while sum(trainer.position.values()) < n and time.monotonic() < deadline:
            t, c = time.perf_counter(), time.process_time()
            handled = trainer.step(0.5)
            if river.done or handled:
                wall["trainer"] += time.perf_counter() - t
                cpu["trainer"] += time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            river.run(handled)
            wall["river"] += time.perf_counter() - t
            cpu["river"] += time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        trainer.checkpoint()
        wall["trainer"] += time.perf_counter() - t
        cpu["trainer"] += time.process_time() - c
        checkpoints = len(trainer.checkpointer.store.manifests(spec.name))
    finally:
        trainer.close()
    assert sum(trainer.position.values()) == n == river.done, "a side did not reach the end"
    return {
        "trainer": n / wall["trainer"],
        "river": n / wall["river"],
        "trainer_cpu": n / cpu["trainer"],
        "river_cpu": n / cpu["river"],
        "checkpoints": checkpoints,
    }


def learn_only(spec: Spec, records: list[Example]) -> float:
    model = spec.build_model()
    data = [(ex.features, ex.label == 1.0) for ex in records]
    start = time.perf_counter()
    for x, y in data:
        model.learn_one(x, y)
    return len(data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=150_000)
    n = parser.parse_args().examples
    spec = load_spec(DEFAULT_SPEC)
    records = examples(spec, n)
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker("127.0.0.1", free_port(), Path(tmp) / "kafka")
        try:
            settings = Settings.from_env(
                {},
                env="dev",  # the embedded stack and the development keys
                kafka_bootstrap=f"{broker.host}:{broker.port}",
                topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
                checkpoint_dir=Path(tmp) / "checkpoints",
                state_dir=Path(tmp) / "state",
            )
            create_topics(settings)
            took = publish(settings, records)
            print(f"published {n} examples in {took:.1f}s")
            rates = paired_run(settings, spec, records)
        finally:
            broker.stop()
    print(
        f"trainer end to end: {rates['trainer']:,.0f} examples/s "
        f"({rates['checkpoints']:.0f} checkpoints kept, "
        f"snapshot every {spec.training.snapshot_every_examples} examples)"
    )
    print(f"river test-then-train loop in process (limit): {rates['river']:,.0f} examples/s")
    print(
        f"per CPU second: trainer {rates['trainer_cpu']:,.0f}, river {rates['river_cpu']:,.0f} "
        f"examples/s (ratio {rates['trainer_cpu'] / rates['river_cpu']:.2f})"
    )
    bare = learn_only(spec, records)
    print(f"river learn_one alone, for reference: {bare:,.0f} examples/s")
    print(
        json.dumps(
            {
                "figure": "trainer examples/s end to end (consume, decode, test-then-train, checkpoints)",
                "value": round(rates["trainer"]),
                "unit": "examples/s",
                "limit": round(rates["river"]),
                "ratio": round(rates["trainer"] / rates["river"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
