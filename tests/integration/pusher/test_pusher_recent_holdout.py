"""The pusher judges on the recent settled holdout outside anomalous windows, and lets a
first model through on the cold-start rule."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from loopline.contracts import CommandKind
from loopline.control import make_command, send
from loopline.routing import RoutingStore
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from pusher.worker import LOOK_SECONDS
from tests.integration.serving.serving_support import (
    announce,
    publish_examples,
    pusher,
    store_of,
    wait_for,
)
from tests.unit.pusher.pusher_support import examples, save, train


def test_examples_inside_a_marked_window_are_not_judged_on(settings: Settings) -> None:
    spec = load_spec(DEFAULT_SPEC)
    store = store_of(settings)
    n = spec.qualification.min_holdout
    burst = examples(n, seed=5, holdout=0.1)  # all at one instant, half an hour ago
    start = burst[0].ts - timedelta(minutes=1)
    mark = make_command(
        CommandKind.MARK_ANOMALOUS,
        spec.name,
        reason="bot burst",
        args={"start": start.isoformat(), "end": (start + timedelta(minutes=2)).isoformat()},
    )
    send(settings, mark)  # before the pusher starts: it reads the whole log on start
    publish_examples(settings, burst)
    good = save(store, spec, "ck-good", train(spec, examples(2000, seed=2)), lineage="a")
    routing = RoutingStore(settings)
    try:
        with pusher(settings, spec) as worker:
            announce(settings, good)
            wait_for(lambda: len(worker.holdout) == n, "the pusher to read the holdout")
            wait_for(lambda: "a" in worker._waiting, "the checkpoint to wait")
            recent = worker.recent()
            assert (len(recent.settled), recent.anomalous) == (0, n)
            later = [replace(r, ts=r.ts + timedelta(minutes=10)) for r in burst]
            publish_examples(settings, later)
            verdict = wait_for(lambda: routing.verdict("ck-good"), "a verdict")
    finally:
        routing.close()
    assert verdict["verdict"] == "qualified", verdict["reasons"]
    assert verdict["figures"]["holdout"] == n
    assert verdict["figures"]["holdout_anomalous"] == n


def test_a_first_model_serves_before_the_holdout_settles(settings: Settings) -> None:
    spec = load_spec(DEFAULT_SPEC)
    store = store_of(settings)
    now = datetime.now(UTC)
    fresh = [replace(r, ts=now) for r in examples(50, seed=6, holdout=0.1)]  # unsettled
    publish_examples(settings, fresh)
    model = train(spec, examples(2000, seed=2))
    learned = spec.qualification.cold_start_examples
    first = save(
        store,
        spec,
        "ck-first",
        model,
        lineage="a",
        examples_seen=learned,
        metrics={"log_loss": 0.3},
    )
    routing = RoutingStore(settings)
    try:
        with pusher(settings, spec) as worker:
            announce(settings, first)
            verdict = wait_for(lambda: routing.verdict("ck-first"), "the first verdict")
            assert verdict["verdict"] == "qualified", verdict["reasons"]
            assert routing.table().champion == "ck-first"
            # The next one is compared with that champion on settled examples: it waits.
            fresher = save(
                store,
                spec,
                "ck-second",
                model,
                lineage="a",
                examples_seen=2 * learned,
                metrics={"log_loss": 0.3},
                created_at=datetime.now(UTC),
            )
            announce(settings, fresher)
            wait_for(lambda: "a" in worker._waiting, "the second checkpoint to wait")
            time.sleep(4 * LOOK_SECONDS)  # looked at again, and still waiting
            assert "a" in worker._waiting and routing.verdict("ck-second") is None
    finally:
        routing.close()
    assert verdict["figures"]["cold_start"] == 1.0
    assert verdict["figures"]["holdout"] == 0 and verdict["figures"]["holdout_recent"] == 50
    assert verdict["action"] == "champion: nothing was serving"


def test_a_mark_sent_while_the_pusher_runs_is_left_out_and_a_clear_brings_it_back(
    settings: Settings,
) -> None:
    spec = load_spec(DEFAULT_SPEC)
    rows = examples(spec.qualification.min_holdout, seed=8, holdout=0.1)
    publish_examples(settings, rows)
    start = rows[0].ts - timedelta(minutes=1)
    window = {"start": start.isoformat(), "end": (start + timedelta(minutes=2)).isoformat()}
    with pusher(settings, spec) as worker:
        wait_for(worker.control.ready.is_set, "the pusher to follow control")
        wait_for(lambda: len(worker.holdout) == len(rows), "the pusher to read the holdout")
        mark = make_command(CommandKind.MARK_ANOMALOUS, spec.name, reason="bots", args=window)
        send(settings, mark)
        wait_for(lambda: bool(worker.control.state.excluded), "the mark to be followed")
        assert worker.recent().anomalous == len(rows)
        clear = make_command(CommandKind.CLEAR_ANOMALOUS, spec.name, args={"id": mark.command_id})
        send(settings, clear)
        wait_for(lambda: not worker.control.state.excluded, "the clear to be followed")
        assert len(worker.recent().settled) == len(rows)
