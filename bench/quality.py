"""Quality: ROC AUC of what serving answered, beside River's own loop at the same delay.

Streams three binary streams through the whole loop, one after the other, each with
its own spec and its own workers (``loopline run streams|trainer|pusher|serving`` as
separate processes, on one embedded broker and the local Redis under a unique prefix):

- ``phishing``: River's bundled ``datasets.Phishing`` (1,250 rows, in file order);
- ``gradual``: a logistic concept on uniform features whose weight vector turns
  steadily through a right angle over the stream (fixed seed), so what was learned
  early is worth less and less;
- ``abrupt``: the same generator, switching half-way to a concept orthogonal to the
  first (the old model knows nothing of the new one).

The label rate and the feature distributions stay put on the synthetic streams: only
the concept moves, so the data-health monitor has nothing to pause for.

Each spec declares the stream's features, a binary label with ``--horizon`` seconds,
a constant fallback of 0.5, no entity features, and takes ``[model]`` and
``[training]`` from the shipped spec (``loopline/specs/yarn_shop.toml``); qualification,
ramp and health are the spec's defaults, the shipped qualification rules.

For every row, at ``--rate`` rows a second: one ``POST /predict`` whose answer is the
served score (serving publishes the event it scored, with the features it used); the
row's label follows ``--delay`` seconds later through ``Publisher.label``, by the event
id the answer carries: the app flow of the README.

Printed per stream: the ROC AUC of the served answers (fallback answers included, as
served) beside River's ceiling, ``progressive_val_score``'s loop
(``stream.simulate_qa``: predict each row, learn each label once revealed) with the
same model factory on the same ordered rows, each label revealed at the delay it
effectively had: the mean number of requests sent between a row's request and its
label (``--delay`` seconds at the achieved rate). Beside them: the fallback share, the
time from the first label published to the first answer from a model, and the AUC
over the last fifth of the abrupt stream. To tell the loop's delay from its learning,
it also prints the serving lag, the mean number of rows between a request and the
newest row the checkpoint answering it had learned (its manifest's
``event_time_max``; over the answers a model gave, the whole stream if none did), and
River's AUC at that lag; and the pusher's verdicts. AUCs are exact (ranks, ties halved), the
same function for both sides.

The JSON line's figure is the stream (or the abrupt stream's last fifth) where the
served AUC falls furthest below River's: ``value`` served, ``limit`` River, ``ratio``
value/limit; every stream's figures follow under ``streams``.
Goal: served AUC within 0.01 of River's on every stream and the last fifth.

    .venv/bin/python bench/quality.py [--rows 5000] [--rate 100] [--delay 2] \\
        [--horizon 5] [--streams phishing,gradual,abrupt] [--logs DIR]

With the defaults a run takes about four minutes: each stream's rows at 100 a second,
and some 20 s to start its workers.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import redis
from river import datasets, stream

from loopline import heartbeat
from loopline.checkpoints import CheckpointStore
from loopline.devstack import Managed, free_port, start_broker
from loopline.errors import CheckpointError
from loopline.kafka import create_topics
from loopline.publisher import Publisher
from loopline.scoring import score
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, Spec, load_spec

REDIS = "redis://127.0.0.1:6379/0"
WORKERS = ("streams", "trainer", "pusher", "serving")
ENTITIES = 500
FEATURES = 6
STEEPNESS = 12.0  # logit scale: the Bayes AUC of the synthetic concepts is about 0.9

Row = tuple[dict[str, float], bool]


# -- the streams -------------------------------------------------------------------


def phishing(rows: int) -> list[Row]:
    """River's bundled Phishing, in file order (1,250 rows; ``rows`` is not used)."""
    del rows
    return [({k: float(v) for k, v in x.items()}, bool(y)) for x, y in datasets.Phishing()]


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(a * a for a in v))
    return [a / norm for a in v]


def rotating(rows: int, seed: int, angle: Callable[[int], float]) -> list[Row]:
    """Uniform features in [0, 1]; P(y) = sigmoid(k w(i)·(x - ½)) with w(i) = cos θ u + sin θ v
    for orthogonal unit vectors u, v and θ = ``angle(i)``."""
    rng = random.Random(seed)
    u = _unit([rng.gauss(0, 1) for _ in range(FEATURES)])
    r = [rng.gauss(0, 1) for _ in range(FEATURES)]
    along = sum(a * b for a, b in zip(r, u, strict=True))
    v = _unit([a - along * b for a, b in zip(r, u, strict=True)])
    out = []
    for i in range(rows):
        theta = angle(i)
        w = [math.cos(theta) * a + math.sin(theta) * b for a, b in zip(u, v, strict=True)]
        x = [round(rng.random(), 4) for _ in range(FEATURES)]
        logit = STEEPNESS * sum(a * (b - 0.5) for a, b in zip(w, x, strict=True))
        y = rng.random() < 1 / (1 + math.exp(-logit))
        out.append(({f"x{j}": x[j] for j in range(FEATURES)}, y))
    return out


def gradual(rows: int) -> list[Row]:
    return rotating(rows, 7, lambda i: math.pi / 2 * i / rows)


def abrupt(rows: int) -> list[Row]:
    return rotating(rows, 11, lambda i: 0.0 if i < rows // 2 else math.pi / 2)


STREAMS: dict[str, Callable[[int], list[Row]]] = {
    "phishing": phishing,
    "gradual": gradual,
    "abrupt": abrupt,
}


# -- metrics -----------------------------------------------------------------------


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """Exact ROC AUC: the chance a positive scores above a negative (ties count half).

    >>> auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
    >>> auc([0.5, 0.5, 0.5], [True, False, True])
    0.5
    """
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum, i = 0.0, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mid = (i + j) / 2 + 1  # ranks are 1-based; tied scores share the mean rank
        rank_sum += mid * sum(labels[order[k]] for k in range(i, j + 1))
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def river_scores(spec: Spec, rows: list[Row], delay: int) -> list[float]:
    """``progressive_val_score``'s loop: each row predicted, then learned ``delay`` rows on."""
    model = spec.build_model()
    out: list[float] = []
    dataset = cast("list[tuple[dict[Hashable, Any], bool]]", rows)  # str keys are Hashable
    for _, x, y, *_ in stream.simulate_qa(dataset, moment=None, delay=delay):
        if y is None:
            out.append(score(model, x, "binary"))
        else:
            model.learn_one(x, y)
    return out


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# -- the loop ----------------------------------------------------------------------


def write_spec(path: Path, name: str, rows: list[Row], horizon: float) -> Spec:
    """A spec for ``rows``: their features, a binary label, the shipped model and training."""
    shipped = tomllib.loads(DEFAULT_SPEC.read_text())
    lines = [
        f'name = "quality_{name}"',
        "spec_version = 1",
        f'description = "bench/quality.py: the {name} stream."',
        "",
        "[entity]",
        'name = "source"',
        "",
    ]
    for feature in rows[0][0]:
        lines += [f"[features.{feature}]", 'type = "float"', "min = 0", "max = 1", ""]
    lines += [
        "[label]",
        'kind = "binary"',
        f"horizon_seconds = {horizon}",
        'on_missing = "drop"',
        "",
        "[model]",
        f"factory = {json.dumps(shipped['model']['factory'])}",
        "params = { "
        + ", ".join(f"{k} = {v}" for k, v in shipped["model"].get("params", {}).items())
        + " }",
        "",
        "[training]",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in shipped["training"].items()]
    lines += ["", "[fallback]", 'kind = "constant"', "value = 0.5", ""]
    path.write_text("\n".join(lines))
    return load_spec(path)


@dataclass
class Served:
    """What serving answered for each row, and when."""

    scores: list[float] = field(default_factory=list)
    versions: list[str | None] = field(default_factory=list)
    sent_at: list[datetime] = field(default_factory=list)
    label_delays: list[int] = field(default_factory=list)  # requests between row and label
    first_label_at: float | None = None
    first_model_at: float | None = None
    seconds: float = 0.0  # from the first request to the last


def start_workers(settings: Settings, logs: Path) -> list[subprocess.Popen[bytes]]:
    env = settings.replace(log_level="WARNING").process_env()
    workers = []
    for name in WORKERS:
        log = (logs / f"{name}.log").open("wb")
        command = [sys.executable, "-c", "from loopline.cli import main; main()", "run", name]
        workers.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for process in workers:
        process.terminate()
    for process in workers:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_for_workers(settings: Settings, url: str, seconds: float = 90) -> float:
    """Wait until serving answers and every worker has beaten once; return the seconds."""
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz")
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        beating = {status.name.split(".")[0] for status in heartbeat.read(settings)}
        if beating >= set(WORKERS):
            return time.monotonic() - start
        time.sleep(0.2)
    raise SystemExit(f"the workers were not all up within {seconds:g}s")


def drive(settings: Settings, url: str, rows: list[Row], rate: float, delay: float) -> Served:
    """One /predict per row at ``rate``, its event at once, its label ``delay`` s later."""
    served = Served()
    rng = random.Random(3)
    due: list[tuple[float, int, str, str, bool]] = []  # (due, row, event_id, entity, label)

    def publish_due(pub: Publisher, until: float) -> None:
        while due and due[0][0] <= until:
            _, row, event_id, entity, y = heapq.heappop(due)
            pub.label(event_id, entity, y)
            if len(served.scores) < len(rows):  # labels after the last request reveal nothing
                served.label_delays.append(len(served.scores) - row)
            if served.first_label_at is None:
                served.first_label_at = time.monotonic()

    start = time.monotonic()
    with Publisher(settings, source="bench") as pub, httpx.Client(base_url=url, timeout=5) as http:
        for i, (x, y) in enumerate(rows):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            publish_due(pub, time.monotonic())
            entity = f"source-{rng.randrange(ENTITIES)}"
            ts = datetime.now(UTC)
            answer = http.post("/predict", json={"entity_id": entity, "features": x}).json()
            fallback = bool(answer["fallback"])
            served.scores.append(float(answer["score"]))
            served.versions.append(None if fallback else answer["model_version"])
            served.sent_at.append(ts)
            if not fallback and served.first_model_at is None:
                served.first_model_at = time.monotonic()
            heapq.heappush(due, (time.monotonic() + delay, i, answer["event_id"], entity, y))
        served.seconds = time.monotonic() - start
        while due:
            time.sleep(max(0.0, due[0][0] - time.monotonic()))
            publish_due(pub, time.monotonic())
    return served


def lags(settings: Settings, served: Served) -> tuple[list[int], list[float]]:
    """Per model answer: rows and seconds from the request back to the newest row its
    checkpoint had learned."""
    store = CheckpointStore.of(settings)
    learned_until: dict[str, datetime | None] = {}
    rows_lag: list[int] = []
    seconds_lag: list[float] = []
    for i, version in enumerate(served.versions):
        if version is None:
            continue
        if version not in learned_until:
            try:
                learned_until[version] = store.manifest(version).event_time_max
            except CheckpointError:
                learned_until[version] = None
        newest = learned_until[version]
        if newest is None:
            continue
        # Rows are sent in event-time order: those up to ``newest`` are the learned span.
        learned = bisect.bisect_right(served.sent_at, newest)
        rows_lag.append(i - learned + 1)
        seconds_lag.append((served.sent_at[i] - newest).total_seconds())
    return rows_lag, seconds_lag


def verdicts(settings: Settings) -> dict[str, int]:
    client: Any = redis.Redis.from_url(settings.redis_url)
    counts: dict[str, int] = {}
    try:
        for key in client.scan_iter(settings.key("verdict", "*"), count=1000):
            raw = client.get(key)
            verdict = json.loads(raw) if raw else {}
            outcome = verdict.get("verdict", "?")
            if outcome == "refused":
                # The reasons' codes ("metric", "calibration", "superseded by <id>" as one).
                codes = (r.split(":")[0].split(" by ")[0] for r in verdict.get("reasons", []))
                outcome += ": " + "; ".join(codes)
            counts[outcome] = counts.get(outcome, 0) + 1
    finally:
        client.close()
    return counts


def clean_redis(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def run_stream(
    name: str, rows: list[Row], args: argparse.Namespace, broker: Managed, tmp: Path
) -> dict[str, Any]:
    home = (args.logs or tmp) / name
    home.mkdir(parents=True)
    spec = write_spec(home / "spec.toml", name, rows, args.horizon)
    port = free_port()
    settings = Settings.from_env(
        {},
        env="dev",  # the embedded stack and the development keys
        kafka_bootstrap=f"{broker.host}:{broker.port}",
        redis_url=REDIS,
        topic_prefix=f"qual{uuid.uuid4().hex[:8]}.",
        spec=home / "spec.toml",
        state_dir=home / "state",
        checkpoint_dir=home / "checkpoints",
        serving_port=port,
    )
    url = f"http://127.0.0.1:{port}"
    create_topics(settings)
    settings.state_dir.mkdir(parents=True)
    workers = start_workers(settings, home)
    try:
        up = wait_for_workers(settings, url)
        print(
            f"[{name}] workers up in {up:.1f}s; {len(rows)} rows at {args.rate:g}/s, "
            f"labels {args.delay:g}s on"
        )
        served = drive(settings, url, rows, args.rate, args.delay)
        outcomes = verdicts(settings)
        row_lags, second_lags = lags(settings, served)
    except BaseException:
        for worker in WORKERS:
            print(f"--- {worker} log tail ---\n{(home / f'{worker}.log').read_text()[-2000:]}")
        raise
    finally:
        stop_workers(workers)
        clean_redis(settings.topic_prefix)
    labels = [y for _, y in rows]
    fallback_share = sum(v is None for v in served.versions) / len(rows)
    label_delay = round(statistics.mean(served.label_delays)) if served.label_delays else 0
    ceiling = river_scores(spec, rows, label_delay)
    # With no model answering, serving lagged the whole stream.
    lag = round(statistics.mean(row_lags)) if row_lags else len(rows)
    lag_s = statistics.mean(second_lags) if second_lags else None
    at_lag = river_scores(spec, rows, lag)
    result: dict[str, Any] = {
        "rows": len(rows),
        "rate": round(len(rows) / served.seconds, 1),
        "served_auc": auc(served.scores, labels),
        "river_auc": auc(ceiling, labels),
        "label_delay_rows": label_delay,
        "fallback_share": round(fallback_share, 4),
        "first_label_to_model_s": (
            round(served.first_model_at - served.first_label_at, 2)
            if served.first_model_at is not None and served.first_label_at is not None
            else None
        ),
        "serving_lag_rows": lag,
        "serving_lag_s": None if lag_s is None else round(lag_s, 2),
        "river_auc_at_serving_lag": auc(at_lag, labels),
        "checkpoints_served": len({v for v in served.versions if v is not None}),
        "verdicts": outcomes,
    }
    if name == "abrupt":
        tail = len(rows) - len(rows) // 5
        result["served_auc_last_fifth"] = auc(served.scores[tail:], labels[tail:])
        result["river_auc_last_fifth"] = auc(ceiling[tail:], labels[tail:])
        result["river_auc_last_fifth_at_serving_lag"] = auc(at_lag[tail:], labels[tail:])
    print("\n".join(report(name, result)))
    return result


def report(name: str, r: dict[str, Any]) -> list[str]:
    """A stream's figures, as printed.

    >>> r = {"served_auc": 0.5, "river_auc": 0.93, "label_delay_rows": 201, "rate": 100.1,
    ...      "fallback_share": 1.0, "first_label_to_model_s": None, "serving_lag_rows": 1250,
    ...      "serving_lag_s": None, "river_auc_at_serving_lag": 0.5, "checkpoints_served": 0,
    ...      "verdicts": {"qualified": 1}}
    >>> print("\\n".join(report("phishing", r)))
    [phishing] served AUC 0.500 vs River 0.930 with labels 201 rows late; fallback 100.0%; no model answered (100.1 rows/s)
    [phishing] serving lagged 1250 rows (n/a) behind the requests; River at that lag 0.500; 0 checkpoints served; verdicts {'qualified': 1}
    """
    first, lag_s = r["first_label_to_model_s"], r["serving_lag_s"]
    lines = [
        f"[{name}] served AUC {fmt(r['served_auc'])} vs River {fmt(r['river_auc'])} with "
        f"labels {r['label_delay_rows']} rows late; fallback {r['fallback_share']:.1%}; "
        + (
            "no model answered"
            if first is None
            else f"first model {first:.1f}s after the first label"
        )
        + f" ({r['rate']:g} rows/s)",
        f"[{name}] serving lagged {r['serving_lag_rows']} rows "
        f"({'n/a' if lag_s is None else f'{lag_s:.1f}s'}) behind the requests; River at that "
        f"lag {fmt(r['river_auc_at_serving_lag'])}; {r['checkpoints_served']} checkpoints "
        f"served; verdicts {r['verdicts']}",
    ]
    if "served_auc_last_fifth" in r:
        lines.append(
            f"[{name}] last fifth: served AUC {fmt(r['served_auc_last_fifth'])} vs River "
            f"{fmt(r['river_auc_last_fifth'])} (at the serving lag "
            f"{fmt(r['river_auc_last_fifth_at_serving_lag'])})"
        )
    return lines


def worst(results: dict[str, dict[str, Any]]) -> tuple[str, float, float]:
    """The (name, served, River) pair with the largest shortfall of served AUC."""
    pairs = []
    for name, r in results.items():
        pairs.append((name, r["served_auc"], r["river_auc"]))
        if "served_auc_last_fifth" in r:
            pairs.append(
                (f"{name}_last_fifth", r["served_auc_last_fifth"], r["river_auc_last_fifth"])
            )
    known = [(n, s, c) for n, s, c in pairs if s is not None and c is not None]
    return max(known, key=lambda p: p[2] - p[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5000, help="rows per synthetic stream")
    parser.add_argument("--rate", type=float, default=100, help="rows (requests) a second")
    parser.add_argument("--delay", type=float, default=2, help="seconds from request to label")
    parser.add_argument("--horizon", type=float, default=5, help="the spec's label horizon (s)")
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument(
        "--logs", type=Path, help="keep each stream's spec, worker logs and state here"
    )
    args = parser.parse_args()
    names = [n for n in args.streams.split(",") if n]
    unknown = sorted(set(names) - set(STREAMS))
    if unknown:
        raise SystemExit(f"unknown streams {unknown}; choose from {sorted(STREAMS)}")
    if args.horizon <= args.delay:
        raise SystemExit(f"--horizon {args.horizon:g} must exceed --delay {args.delay:g}")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker("127.0.0.1", free_port(), Path(tmp) / "kafka")
        try:
            for name in names:
                results[name] = run_stream(name, STREAMS[name](args.rows), args, broker, Path(tmp))
        finally:
            broker.stop()
    figure, value, limit = worst(results)
    print(
        json.dumps(
            {
                "figure": "quality_worst_served_auc_vs_river",
                "value": round(value, 4),
                "unit": "roc_auc",
                "limit": round(limit, 4),
                "ratio": round(value / limit, 3),
                "worst": figure,
                "streams": results,
            }
        )
    )


if __name__ == "__main__":
    main()
