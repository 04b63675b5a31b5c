"""The fault scenarios, sized by their arguments: the tests run them short, ``bench/faults.py``
long. Each starts its workers, publishes, injects its fault, waits for the loop to
settle and returns the :class:`~tests.faults.harness.Figures` it measured; none asserts.
"""

from __future__ import annotations

import random
import signal
import time
from datetime import timedelta
from pathlib import Path

from confluent_kafka import Producer

from loopline.kafka import create_topics, producer_config
from loopline.settings import Settings
from tests.faults.harness import (
    Figures,
    Ledger,
    Scenario,
    Traffic,
    accounting_cli,
    checkpointed_to_end,
    event_ids,
    false_balance,
    probe_books,
    publish,
    record_probes,
    restart_redis,
    scenario,
    signal_server,
    streams_ready,
    wait_for,
)
from tests.faults.poison import TOPICS, poison_values

SESSION_TIMEOUT_S = 6.0


def _model(s: Scenario) -> str:
    return s.settings.load_spec().name


def _finish(
    s: Scenario,
    name: str,
    traffic: Traffic,
    fault_over: float,
    *,
    trainer: bool = False,
    timeout: float = 90,
    supervise: tuple[str, ...] = (),
) -> Figures:
    """Wait for every published event to be accounted (and the trainer to checkpoint up
    to the end of ``examples``), then count; the books' verdict goes into the notes.
    Workers in ``supervise`` that exit are restarted, as compose would, and counted."""
    restarts: list[str] = []

    def supervisor() -> None:
        restarts.extend(s.procs.revive(*supervise))

    traffic.join()
    s.ledger.wait(traffic.published, timeout, tick=supervisor)
    recovery = time.monotonic() - fault_over
    model = _model(s) if trainer else None
    timed_out = None
    if model is not None:

        def covered() -> bool:
            supervisor()
            return checkpointed_to_end(s.settings, model, s.ledger)

        try:
            wait_for(covered, 60, "checkpoints up to the end of examples")
        except AssertionError as exc:
            s.ledger.update()
            timed_out = str(exc)
    figures = s.figures(name, traffic.published, recovery, model)
    if timed_out:
        figures.notes["checkpoint_timeout"] = timed_out
    if supervise:
        figures.notes["restarts"] = restarts
    verdict = accounting_cli(s.settings)
    figures.notes["books_balance"] = verdict.balanced
    figures.notes["false_balance"] = false_balance(verdict, figures.lost)
    figures.notes["workers_down"] = [n for n, up in s.procs.alive().items() if not up]
    if traffic.errors:
        figures.notes["publish_errors"] = traffic.errors[:3]
    return figures


def _start(s: Scenario, streams: int = 1, trainer: bool = False) -> None:
    for i in range(streams):
        s.procs.start(f"streams-{i}", "streams", s.settings)
    if trainer:
        s.procs.start("trainer", "trainer", s.settings)
    streams_ready(s.procs, "streams-0")


# -- 1. SIGKILL ----------------------------------------------------------------------


def kill_streams(base: Settings, directory: Path, events: int = 3000, kills: int = 3) -> Figures:
    """SIGKILL one of two streams workers ``kills`` times while events flow; restart it."""
    with scenario(base, directory) as s:
        _start(s, streams=2)
        traffic = Traffic(s.settings, event_ids("kill", events), per_second=250).start()
        done = 0
        step = events // (kills + 1)
        for k in range(kills):
            target = step * (k + 1)
            wait_for(lambda: len(traffic.published) > target, 120, "traffic")  # noqa: B023
            if traffic.done():
                break
            s.procs.kill("streams-0")
            done += 1
            s.procs.restart("streams-0")
        figures = _finish(s, "kill", traffic, time.monotonic())
        figures.notes["kills"] = done
        return figures


# -- 2. SIGSTOP past the session timeout ---------------------------------------------


def pause_streams(
    base: Settings, directory: Path, events: int = 2000, paused_s: float = 9.0
) -> Figures:
    """SIGSTOP one of two streams workers past its session timeout, then SIGCONT."""
    with scenario(base, directory) as s:
        _start(s, streams=2)
        streams_ready(s.procs, "streams-1")
        traffic = Traffic(s.settings, event_ids("stop", events), per_second=200).start()
        wait_for(lambda: len(traffic.published) > events // 4, 60, "traffic")
        s.procs.signal("streams-0", signal.SIGSTOP)
        stopped = time.monotonic()
        time.sleep(1.0)  # within the session timeout: its partitions are held up
        probes = [probe_books(s.settings)]
        time.sleep(max(0.0, paused_s - (time.monotonic() - stopped)))
        s.procs.signal("streams-0", signal.SIGCONT)
        figures = _finish(s, "sigstop", traffic, time.monotonic())
        figures.notes["paused_s"] = paused_s
        record_probes(figures, probes)
        return figures


# -- 3. Redis hung, then killed ------------------------------------------------------


def redis_faults(
    base: Settings, directory: Path, events: int = 2000, hung_s: float = 8.0, down_s: float = 5.0
) -> Figures:
    """A private Redis SIGSTOPped, then SIGKILLed and restarted empty, under a streams
    worker and the trainer: examples must keep flowing while Redis is hung."""
    with scenario(base, directory, private_redis=True) as s:
        assert s.redis is not None
        _start(s, trainer=True)
        traffic = Traffic(s.settings, event_ids("redis", events), per_second=150).start()
        wait_for(lambda: len(traffic.published) > events // 5, 60, "traffic")
        s.ledger.update()
        before = len(s.ledger.examples)
        signal_server(s.redis, signal.SIGSTOP)
        hung = time.monotonic()
        probes = [probe_books(s.settings)]  # the books live in the hung Redis
        time.sleep(max(0.0, hung_s - (time.monotonic() - hung)))
        s.ledger.update()
        during_hang = len(s.ledger.examples) - before
        signal_server(s.redis, signal.SIGCONT)
        time.sleep(2)
        signal_server(s.redis, signal.SIGKILL)
        time.sleep(down_s)
        s.redis = restart_redis(s.redis)
        figures = _finish(
            s, "redis", traffic, time.monotonic(), trainer=True, supervise=("trainer",)
        )
        figures.notes["examples_during_hang"] = during_hang
        record_probes(figures, probes)
        return figures


# -- 4. broker unreachable -----------------------------------------------------------


def broker_cut(base: Settings, directory: Path, events: int = 2000, cut_s: float = 12.0) -> Figures:
    """Every connection to the broker cut for ``cut_s`` through the forwarder."""
    with scenario(base, directory, private_broker=True) as s:
        assert s.broker is not None
        _start(s, trainer=True)
        traffic = Traffic(
            s.settings.replace(publish_timeout_seconds=cut_s + 60),
            event_ids("cut", events),
            per_second=150,
        ).start()
        wait_for(lambda: len(traffic.published) > events // 4, 60, "traffic")
        s.broker.forwarder.cut()
        cut = time.monotonic()
        time.sleep(1.0)
        probes = [probe_books(s.settings)]  # no broker: nothing can be said to balance
        time.sleep(max(0.0, cut_s - (time.monotonic() - cut)))
        s.broker.forwarder.restore()
        figures = _finish(s, "broker_cut", traffic, time.monotonic(), trainer=True, timeout=120)
        figures.notes["cut_s"] = cut_s
        record_probes(figures, probes)
        return figures


# -- 5. poison -----------------------------------------------------------------------

POISON_KEYS = (b"u1", b"u7", b"\xff\xfe", b"", None)


def poison(base: Settings, directory: Path, per_topic: int = 60, good: int = 500) -> Figures:
    """Poison on every topic a worker reads, amid good traffic: every worker still runs,
    every poison event and label is deadlettered, every poison example counted invalid."""
    rng = random.Random(7)
    with scenario(base, directory) as s:
        _start(s, trainer=True)
        s.procs.start("pusher", "pusher", s.settings)
        producer = Producer(producer_config(s.settings, **{"message.max.bytes": 10_000_000}))
        values = poison_values(rng, per_topic)
        for name in TOPICS:
            for value in values:
                producer.produce(s.settings.topic(name), value, rng.choice(POISON_KEYS))
                producer.poll(0)
            assert producer.flush(60) == 0
        traffic = publish(s.settings, event_ids("good", good))
        figures = _finish(s, "poison", traffic, time.monotonic(), trainer=True)
        dead: dict[str, int] = {}
        for d in s.ledger.deadletters:
            topic = str(d.get("source_topic", "")).removeprefix(s.settings.topic_prefix)
            dead[topic] = dead.get(topic, 0) + 1
        figures.notes["poison_per_topic"] = len(values)
        figures.notes["deadlettered_by_topic"] = dead
        store_invalid = _trainer_invalid(s)
        figures.notes["trainer_invalid"] = store_invalid
        # Unaccounted poison: event and label records not deadlettered, examples not counted.
        unaccounted = sum(max(0, len(values) - dead.get(t, 0)) for t in ("events", "labels"))
        unaccounted += max(0, len(values) - store_invalid)
        figures.notes["poison_unaccounted"] = unaccounted
        figures.lost += unaccounted
        return figures


def _trainer_invalid(s: Scenario) -> int:
    from loopline.checkpoints import CheckpointStore

    manifests = CheckpointStore.of(s.settings).manifests(_model(s))
    if not manifests:
        return 0
    newest = max(manifests, key=lambda m: m.created_at)
    return int(newest.metrics.get("examples_invalid") or 0)


# -- 6. a backfill published again ---------------------------------------------------


def backfill_again(base: Settings, directory: Path, events: int = 1000) -> Figures:
    """A backfill published again (same event ids) once streams may have forgotten them
    (past two label horizons), and copies of its examples replayed onto ``examples`` (a
    zombie writer): the trainer must not learn any event a second time."""
    horizon = 3.0
    with scenario(base, directory, horizon=horizon) as s:
        _start(s, trainer=True)
        model = _model(s)
        ids = event_ids("backfill", events)
        first = publish(s.settings, ids)
        s.ledger.wait(first.published, 60)
        wait_for(lambda: checkpointed_to_end(s.settings, model, s.ledger), 60, "checkpoints")
        time.sleep(3 * horizon + 2)
        traffic = publish(s.settings, ids)
        producer = Producer(producer_config(s.settings))
        copies = list(s.ledger.examples)
        for e in copies:
            producer.produce(s.settings.topic("examples"), e.raw, e.key)
        assert producer.flush(30) == 0
        figures = _finish(s, "backfill", traffic, time.monotonic(), trainer=True)
        figures.notes["reemitted_by_streams"] = figures.emitted_twice - len(copies)
        figures.notes["replayed_onto_examples"] = len(copies)
        figures.emitted_twice = (
            0  # second copies on examples are the fault here; learning one is not
        )
        return figures


# -- 7. two trainers for one model ---------------------------------------------------


def two_trainers(base: Settings, directory: Path, events: int = 1500) -> Figures:
    """A second trainer for the same model: it must refuse (exit, or train nothing)."""
    with scenario(base, directory) as s:
        _start(s, trainer=True)
        model = _model(s)
        first = publish(s.settings, event_ids("one", events // 3))
        s.ledger.wait(first.published, 60)
        wait_for(lambda: checkpointed_to_end(s.settings, model, s.ledger), 60, "a checkpoint")
        s.procs.start("trainer-2", "trainer", s.settings)
        time.sleep(8)
        traffic = publish(s.settings, event_ids("two", events - events // 3))
        traffic.published[:0] = first.published
        figures = _finish(s, "two_trainers", traffic, time.monotonic(), trainer=True)
        code = s.procs.exit_code("trainer-2")
        figures.notes["second_exit_code"] = code
        figures.notes["second_refused"] = code not in (None, 0) or figures.notes["lineages"] == 1
        figures.notes["workers_down"] = [
            n for n in figures.notes["workers_down"] if n != "trainer-2"
        ]
        if not figures.notes["second_refused"]:
            # Both trained: the model was learned by two writers.
            figures.learned_twice = max(figures.learned_twice, 1)
        return figures


# -- 8. a labeller whose clock runs ahead --------------------------------------------


def clock_ahead(
    base: Settings, directory: Path, events: int = 1000, ahead_s: float = 60.0
) -> Figures:
    """Labels stamped ``ahead_s`` in the future: real labels must stay real, not default 0."""
    with scenario(base, directory, horizon=10) as s:
        _start(s)
        traffic = Traffic(
            s.settings, event_ids("ahead", events), 2000, label_shift=timedelta(seconds=ahead_s)
        ).start()
        figures = _finish(s, "clock_ahead", traffic, time.monotonic())
        wrong = [
            e
            for e in s.ledger.examples
            if not e.label_observed or e.label != float(int(e.event_id[-1]) % 2)
        ]
        figures.notes["labels_defaulted"] = len(wrong)
        # A real label turned into the default is a label lost.
        figures.lost += len(wrong)
        return figures


# -- 9. the broker restarted empty ---------------------------------------------------


def broker_restarted_empty(base: Settings, directory: Path, events: int = 500) -> Figures:
    """The broker loses every topic under running workers; topics are created again and
    traffic resumes: new events must not be silently skipped, and the books must not
    balance while they are."""
    with scenario(base, directory, private_broker=True) as s:
        assert s.broker is not None
        _start(s)
        first = publish(s.settings, event_ids("before", events))
        s.ledger.wait(first.published, 60)
        s.broker.restart_empty()
        fault_over = time.monotonic()
        verdict_empty = accounting_cli(s.settings)
        create_topics(s.settings)
        s.ledger.close()
        s.ledger = Ledger(s.settings)
        traffic = publish(s.settings, event_ids("after", events))
        # Every partition is rebuilt, and its replaced logs found, once per failed attempt
        # (the producer of the old broker fails fatally at first): allow for it.
        figures = _finish(s, "broker_empty", traffic, fault_over, timeout=120)
        figures.notes["books_balance_when_empty"] = verdict_empty.balanced
        # A balance claimed over an empty broker hides what it lost.
        figures.notes["false_balance"] += int(verdict_empty.balanced)
        return figures
