"""Every operator command against the four workers running as processes.

Each command is checked for its effect on the running loop (the trainer stops and
resumes learning, serving answers from the fallback or the rolled-back model, ...),
for the auditable Command it leaves on ``control``, and for its refusal cases: a
command that cannot apply says why, exits 1, and changes and sends nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner, Result

from loopline.cli import app
from loopline.contracts import CommandKind, utcnow
from loopline.control import make_command, read_all, send
from loopline.devstack import free_port
from loopline.heartbeat import WorkerStatus
from loopline.heartbeat import read as heartbeats
from loopline.kafka import producer_config
from loopline.publisher import Publisher
from loopline.routing import RoutingStore
from loopline.settings import Settings
from ops.acknowledge import await_applied
from ops.demo_workers import Workers
from tests.integration.serving.serving_support import wait_for
from tests.integration.streams.streams_support import spec_variant

WORKERS = ("streams", "trainer", "pusher", "serving")
CATEGORIES = ("wool", "cotton", "alpaca", "silk")
FAST = {"snapshot_every_seconds": 1, "snapshot_every_examples": 200}


def fast_spec(directory: Path) -> Path:
    """The yarn shop with quick snapshots and a small holdout requirement."""
    path = spec_variant(directory)
    text = path.read_text()
    for old, new in (
        ("snapshot_every_examples = 5000", "snapshot_every_examples = 200"),
        ("snapshot_every_seconds = 10", "snapshot_every_seconds = 1"),
        ("min_holdout = 200", "min_holdout = 20"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


@pytest.fixture
def loop(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The four workers as `loopline run <worker>` processes."""
    s = settings.replace(spec=fast_spec(tmp_path), serving_port=free_port(), log_level="INFO")
    with Workers(s.state_dir / "logs") as workers:
        for worker in WORKERS:
            workers.start(worker, worker, s)
        yield s


def cli(s: Settings, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(app, list(args), env=s.process_env({"COLUMNS": "250"}))
    assert result.exit_code == code, f"loopline {' '.join(args)}: {result.output}"
    return result


def cli_json(s: Settings, *args: str) -> Any:
    return orjson.loads(cli(s, *args, "--json").stdout)


def traffic(s: Settings, count: int, rng: random.Random) -> None:
    """Impressions and their labels at once, so examples follow without the horizon."""
    with Publisher(s, source="test") as pub:
        for i in range(count):
            features = {
                "price": round(rng.uniform(2, 80), 2),
                "category": rng.choice(CATEGORIES),
                "hour": rng.randrange(24),
                "device": rng.choice(("mobile", "desktop")),
            }
            entity = f"u{i % 50}"
            event_id = pub.event(entity, features)
            clicked = rng.random() < (0.3 if features["device"] == "desktop" else 0.05)
            pub.label(event_id, entity, clicked)


def trainer_beat(s: Settings) -> WorkerStatus:
    return next(w for w in heartbeats(s) if w.name.startswith("trainer."))


def learned(s: Settings) -> int:
    return sum(int(v) for v in trainer_beat(s).state["position"].values())


def commands(s: Settings, kind: CommandKind) -> list[Any]:
    return [c for c in read_all(s) if c.kind is kind]


def predict(s: Settings) -> dict[str, Any]:
    body = {
        "entity_id": "u1",
        "features": {"price": 9.5, "category": "wool", "hour": 12, "device": "desktop"},
    }
    url = f"http://{s.serving_host}:{s.serving_port}/predict"
    return httpx.post(url, json=body, timeout=5).json()  # type: ignore[no-any-return]


def eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    def safe() -> Any:
        try:
            return check()
        except (StopIteration, KeyError, httpx.HTTPError):
            return None

    return wait_for(safe, what, timeout)


def test_operator_commands_against_running_workers(loop: Settings) -> None:
    s, rng = loop, random.Random(7)
    traffic(s, 1500, rng)
    producer = Producer(producer_config(s))
    for bad in (b"{not json", b"[1, 2]", b'{"schema_version": 1}'):
        producer.produce(s.topic("events"), bad, b"u-bad")
    assert producer.flush(10) == 0
    routing = RoutingStore(s)
    first = eventually(lambda: routing.table().champion, "a first champion", 120)

    # status: every section filled from the running loop
    report = cli_json(s, "status")
    assert report["serving"]["champion"] == first
    assert report["newest_checkpoint"]["examples_seen"] > 0
    assert report["accounting"]["published"] >= 1503
    assert report["training"]["paused"] is False
    assert report["data_health"]["verdict"] in ("warming up", "healthy", "breach")
    assert set(report["lag"]) == {
        f"{s.topic_prefix}streams",
        f"{s.topic_prefix}trainer.{s.load_spec().name}",
        f"{s.topic_prefix}pusher",
    }
    names = {w["name"].split(".")[0] for w in report["workers"]}
    assert names == set(WORKERS)
    assert "training of" in cli(s, "status").stdout

    # pause: the trainer stops learning; a second pause is refused and sends nothing
    out = cli(s, "pause", "--reason", "maintenance").stdout
    assert "applied by trainer." in out
    assert trainer_beat(s).state["paused"] is True
    status = cli_json(s, "status")["training"]
    assert (status["paused"], status["pause_reason"], status["trainer_paused"]) == (
        True,
        "maintenance",
        True,
    )
    refused = cli(s, "pause", "--reason", "again", code=1).stderr
    assert "already paused" in refused and "maintenance" in refused
    assert len(commands(s, CommandKind.PAUSE)) == 1
    held = learned(s)
    traffic(s, 300, rng)
    eventually(
        lambda: cli_json(s, "status")["lag"][f"{s.topic_prefix}streams"]["events"] == 0,
        "the streams to read the new traffic",
    )
    assert learned(s) == held, "a paused trainer learned"

    # resume: learning goes on from where it stopped; resuming again is refused
    assert "applied by trainer." in cli(s, "resume", "--reason", "done").stdout
    eventually(lambda: learned(s) > held, "the trainer to learn again")
    assert "not paused" in cli(s, "resume", code=1).stderr
    assert len(commands(s, CommandKind.RESUME)) == 1

    # with Redis out of reach a pause still goes out on control, unconfirmed
    dead_redis = s.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert "cannot confirm" in cli(dead_redis, "pause", "--reason", "redis down", code=1).stderr
    eventually(lambda: trainer_beat(s).state["paused"], "the trainer to pause", 10)
    assert "applied by trainer." in cli(s, "resume", "--reason", "redis back").stdout

    # anomalous windows: mark, list, refuse a duplicate and an unknown id, clear
    start = (utcnow() - timedelta(hours=2)).replace(microsecond=0)
    window = ["--start", start.isoformat(), "--end", (start + timedelta(hours=1)).isoformat()]
    out = cli(s, "anomaly", "mark", *window, "--reason", "bot attack").stdout
    assert "applied by trainer." in out
    marks = cli_json(s, "anomaly", "list")
    assert [(m["reason"], m["start"]) for m in marks] == [("bot attack", start.isoformat())]
    assert len(trainer_beat(s).state["windows"]) == 1
    assert "already marked" in cli(s, "anomaly", "mark", *window, "--reason", "x", code=1).stderr
    assert "no anomalous window" in cli(s, "anomaly", "clear", "nope", code=1).stderr
    backwards = ["--start", window[3], "--end", window[1]]
    bad = cli(s, "anomaly", "mark", *backwards, "--reason", "x", code=2)
    assert "not after start" in bad.output
    assert "applied by trainer." in cli(s, "anomaly", "clear", marks[0]["id"]).stdout
    assert cli_json(s, "anomaly", "list") == []
    assert trainer_beat(s).state["windows"] == []
    assert len(commands(s, CommandKind.MARK_ANOMALOUS)) == 1
    assert len(commands(s, CommandKind.CLEAR_ANOMALOUS)) == 1  # the refused clear sent nothing

    # kill switch: serving answers from the fallback at once; twice on is refused
    assert predict(s)["fallback"] is False
    cli(s, "killswitch", "on", "--reason", "incident 7")
    eventually(lambda: predict(s)["fallback"], "serving to answer from the fallback", 10)
    assert "already on" in cli(s, "killswitch", "on", "--reason", "x", code=1).stderr
    assert "Redis failed" in cli(dead_redis, "killswitch", "off", "--reason", "x", code=2).stderr
    cli(s, "killswitch", "off", "--reason", "incident over")
    eventually(lambda: not predict(s)["fallback"], "serving to answer from models", 10)
    assert len(commands(s, CommandKind.KILL_SWITCH_ON)) == 1
    assert len(commands(s, CommandKind.KILL_SWITCH_OFF)) == 1

    # rollback: refused to an unknown checkpoint; otherwise serves the former champion
    # More traffic gives the pusher fresher checkpoints to judge: on a busy machine the
    # first ones after the resume may be few and refused on the metric tolerance.
    traffic(s, 600, rng)
    eventually(lambda: routing.former_champions(), "a fresher champion to replace the first", 120)
    version, claims = routing.table().version, routing.client.zcard(routing.applied_key)
    assert "not qualified" in cli(s, "rollback", "--to", "ck-x", "--reason", "x", code=1).stderr
    assert routing.table().version == version and not commands(s, CommandKind.ROLLBACK)
    assert routing.client.zcard(routing.applied_key) == claims  # no claim left behind
    cli(s, "rollback", "--reason", "numbers look off")
    target = routing.table().champion
    assert target == routing.former_champions()[0] or target in routing.former_champions()
    assert routing.pinned() == target
    eventually(lambda: predict(s)["model_version"] == target, "serving the rolled-back model")
    (rollback,) = commands(s, CommandKind.ROLLBACK)
    assert (rollback.reason, rollback.args["checkpoint"]) == ("numbers look off", target)
    again = cli(s, "rollback", "--to", target, "--reason", "x", code=1).stderr
    assert "already serves everyone" in again and len(commands(s, CommandKind.ROLLBACK)) == 1
    cli(s, "unpin")
    assert "nothing is pinned" in cli(s, "unpin", code=1).stderr

    # deadletter tail, with and without a reason
    rows = eventually(lambda: cli_json(s, "deadletter", "tail"), "deadlettered records")
    assert len(rows) == 3 and all(r["source"].startswith(s.topic("events")) for r in rows)
    malformed = cli_json(s, "deadletter", "tail", "--reason", "malformed_json")
    assert malformed and {r["reason"] for r in malformed} == {"malformed_json"}
    assert rows[-1]["reason"] != "malformed_json"  # so the newest record alone holds none
    short = cli(s, "deadletter", "tail", "--reason", "malformed_json", "--scan", "1", "--json")
    assert orjson.loads(short.stdout) == [] and "searched the newest 1" in short.stderr

    # replay: refused from a checkpoint that does not exist; else a new lineage appears
    assert "cannot replay" in cli(s, "replay", "--from", "ck-x", "--reason", "x", code=1).stderr
    bogus = send(s, make_command(CommandKind.REPLAY, s.load_spec().name, args={"from": "ck-x"}))
    ack = await_applied(s, bogus, 30)
    assert not ack.applied and not ack.pending and "ck-x" in ack.refused[trainer_beat(s).name]
    listed = cli_json(s, "checkpoints", "list")
    assert listed and all(c["verified"] == "yes" for c in listed)
    oldest = min(listed, key=lambda c: c["created_at"])
    out = cli(s, "replay", "--from", oldest["id"], "--reason", "relearn without bots").stdout
    lineage = out.rsplit("will be ", 1)[1].strip()
    eventually(
        lambda: any(c["lineage"] == lineage for c in cli_json(s, "checkpoints", "list")),
        "a checkpoint of the replayed lineage",
    )

    # history: the whole story, in time order
    entries = cli_json(s, "history", "--limit", "1000")
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    kinds = {e["kind"] for e in entries}
    assert {"control", "checkpoint", "qualified", "routing"} <= kinds
    whys = {e["why"] for e in entries if e["kind"] == "control"}
    assert {"maintenance", "bot attack", "numbers look off", "incident 7"} <= whys
    assert any("rollback to" in e["what"] for e in entries if e["kind"] == "routing")
    partial = cli(dead_redis, "history", "--json", code=1)
    assert "routing log not read" in partial.stderr
    assert {e["kind"] for e in orjson.loads(partial.stdout)} == {"control", "checkpoint"}
    routing.close()
