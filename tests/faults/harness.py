"""Fault injection against the real workers: processes, traffic with known ids, a ledger.

Every scenario runs ``loopline run streams|trainer|...`` processes (:class:`Procs`) on
the embedded stack, publishes events and their labels with known event ids
(:class:`Traffic`), injects a fault (SIGKILL, SIGSTOP, a hung or killed Redis, a broker
cut off behind a :class:`~tests.forwarder.Forwarder` or restarted empty) and then
counts, from what the broker holds (:class:`Ledger`):

- ``lost``: published event ids found neither on ``examples`` nor on ``deadletter``,
  and published labels missing from their example (``labels_lost``);
- ``emitted_twice``: extra copies of an event id on ``examples``;
- ``learned_twice``: per trainer lineage, examples learned (``examples_seen`` plus the
  holdout) beyond the distinct event ids below the checkpoint's offsets.

It also asks ``loopline accounting`` (the real command) whether the books balance: the
books must not say so while the ledger finds records unprocessed
(:func:`false_balance`), nor while a fault holds records up (:func:`probe_books`). Used by ``tests/faults/`` (short runs) and ``bench/faults.py``
(long runs); nothing here asserts.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from loopline import accounting
from loopline.checkpoints import CheckpointStore
from loopline.contracts import CheckpointManifest, Example, FeatureValue
from loopline.devstack import Managed, free_port, start_redis, tansu_binary
from loopline.errors import RecordError
from loopline.kafka import consumer_config, create_topics, topic_sizes, wait_for_broker
from loopline.publisher import Publisher
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC
from ops.demo_spec import to_toml
from ops.demo_workers import Workers
from tests.forwarder import Forwarder

ROOT = Path(__file__).resolve().parents[2]
GOOD: dict[str, FeatureValue] = {"price": 12.5, "hour": 9, "device": "mobile", "category": "wool"}
#: The data-health monitor must not pause training over the fault's own bursts.
QUIET_HEALTH = {"window_seconds": 3600, "baseline_windows": 3, "min_events": 1_000_000}


# -- specs ---------------------------------------------------------------------------


def fast_spec(directory: Path, horizon: float = 4, base: Path = DEFAULT_SPEC) -> Path:
    """The shipped spec with a label horizon of seconds and frequent snapshots, so an
    event without a label resolves, and a trainer checkpoints, within a test."""
    data = tomllib.loads(base.read_text())
    data["label"]["horizon_seconds"] = horizon
    data["health"] = {**data.get("health", {}), **QUIET_HEALTH}
    data["training"].update(snapshot_every_examples=500, snapshot_every_seconds=1)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"faults-{time.monotonic_ns()}.toml"
    path.write_text(to_toml(data))
    return path


# -- servers -------------------------------------------------------------------------


@dataclass
class PrivateBroker:
    """A Tansu broker of one test, reached only through ``forwarder``: it advertises the
    forwarder's port, so every client connection (metadata included) can be cut."""

    server: Managed
    forwarder: Forwarder
    directory: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.forwarder.port}"

    def restart_empty(self) -> None:
        """Stop the broker and start a fresh one (memory storage: every topic is gone)."""
        self.server.stop()
        self.server = _spawn_tansu(self.directory, self.forwarder.port)
        self.forwarder.target = ("127.0.0.1", self.server.port)
        self.forwarder.cut()  # connections to the old broker are dead anyway
        self.forwarder.restore()
        wait_for_broker(Settings.from_env({}, kafka_bootstrap=self.bootstrap), timeout=20)

    def stop(self) -> None:
        self.forwarder.stop()
        self.server.stop()


def _spawn_tansu(directory: Path, advertised_port: int) -> Managed:
    port = free_port()
    server = Managed(f"kafka-{port}", "127.0.0.1", port, directory)
    server.spawn(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]
    )
    return server


def start_private_broker(directory: Path) -> PrivateBroker:
    directory.mkdir(parents=True, exist_ok=True)
    forwarder = Forwarder.start(free_port(), "127.0.0.1", free_port())
    server = _spawn_tansu(directory, forwarder.port)
    forwarder.target = ("127.0.0.1", server.port)
    broker = PrivateBroker(server, forwarder, directory)
    wait_for_broker(Settings.from_env({}, kafka_bootstrap=broker.bootstrap), timeout=20)
    return broker


def start_private_redis(directory: Path) -> tuple[Managed, str]:
    """A Redis of one test, to SIGSTOP or kill without touching the shared one."""
    directory.mkdir(parents=True, exist_ok=True)
    server = start_redis("127.0.0.1", free_port(), directory)
    return server, f"redis://127.0.0.1:{server.port}/0"


def restart_redis(server: Managed) -> Managed:
    """Start a Redis again on the port of one that was killed (its data is gone)."""
    if server.process is not None:
        server.process.wait(10)  # reap it: the new server reuses its pid file
    return start_redis(server.host, server.port, server.directory)


def signal_server(server: Managed, sig: int) -> None:
    pid = server.pid()
    if pid is None:
        raise RuntimeError(f"{server.name} is not running")
    os.kill(pid, sig)


# -- worker processes ----------------------------------------------------------------


class Procs(Workers):
    """The workers of one scenario, as ``loopline run <worker>`` processes."""

    def __init__(self, logs: Path) -> None:
        super().__init__(logs)
        self.kinds: dict[str, str] = {}
        self.settings_of: dict[str, Settings] = {}

    def start(self, name: str, worker: str, settings: Settings) -> None:
        self.kinds[name] = worker
        self.settings_of[name] = settings
        super().start(name, worker, settings)

    def restart(self, name: str) -> None:
        self.procs.pop(name, None)
        self.start(name, self.kinds[name], self.settings_of[name])

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].send_signal(sig)

    def revive(self, *names: str) -> list[str]:
        """Restart those of ``names`` that exited, as a supervisor (compose's
        ``restart: unless-stopped``) would; the ones restarted."""
        exited = [n for n in names if n in self.procs and self.procs[n].poll() is not None]
        for name in exited:
            self.restart(name)
        return exited

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    def exit_code(self, name: str) -> int | None:
        return self.procs[name].poll()

    def text(self, name: str) -> str:
        return self.log(name).read_text(errors="replace")

    def grep(self, name: str, *needles: str, limit: int = 8) -> list[str]:
        """Log lines of a worker that mention any of ``needles`` (case-insensitive)."""
        lines = [
            line
            for line in self.text(name).splitlines()
            if any(n.lower() in line.lower() for n in needles)
        ]
        return lines[:limit]


_READY = re.compile(r"partition \d+ ready")


def wait_for(check: Callable[[], Any], timeout: float, what: str, pause: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def streams_ready(procs: Procs, name: str, timeout: float = 60) -> None:
    """Wait until a streams worker took partitions (faust logs ``partition N ready``)."""
    wait_for(
        lambda: _READY.search(procs.text(name)) or procs.exit_code(name) is not None,
        timeout,
        f"{name} to take partitions",
    )
    if procs.exit_code(name) is not None:
        raise AssertionError(f"{name} exited: {procs.text(name)[-3000:]}")


# -- traffic -------------------------------------------------------------------------


def event_ids(tag: str, count: int, start: int = 0) -> list[str]:
    return [f"{tag}-{i:07d}" for i in range(start, start + count)]


def expected_label(event_id: str) -> int:
    """The label :class:`Traffic` publishes for an event id of :func:`event_ids`."""
    return int(event_id[-1]) % 2


@dataclass
class Traffic:
    """Events with known ids, each followed by its label, at a steady pace in a thread.

    ``label_shift`` moves every label's timestamp (a labeller whose clock runs ahead).
    """

    settings: Settings
    ids: list[str]
    per_second: float = 1000.0
    label_shift: timedelta = timedelta(0)
    labels: bool = True
    published: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        chunk = max(1, int(self.per_second / 20))
        try:
            with Publisher(self.settings, source="faults") as pub:
                for start in range(0, len(self.ids), chunk):
                    if self._stop.is_set():
                        break
                    for event_id in self.ids[start : start + chunk]:
                        entity = f"u{hash(event_id) % 97}"
                        now = datetime.now(UTC)
                        pub.event(entity, GOOD, now, event_id=event_id)
                        if self.labels:
                            pub.label(
                                event_id, entity, expected_label(event_id), now + self.label_shift
                            )
                        self.published.append(event_id)
                    pub.flush()
                    time.sleep(0.05)
        except Exception as exc:  # reported with the counts: a publisher that gave up
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float = 300) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()


def publish(settings: Settings, ids: list[str], per_second: float = 5000, **kw: Any) -> Traffic:
    """Publish ``ids`` (events and labels) and wait until all were acknowledged."""
    traffic = Traffic(settings, ids, per_second, **kw).start()
    traffic.join()
    return traffic


# -- the ledger ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Emitted:
    partition: int
    offset: int
    event_id: str
    label: float
    label_observed: bool
    key: bytes | None
    raw: bytes


class Ledger:
    """What ``examples`` and ``deadletter`` hold, read from the start and kept up to date."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.examples: list[Emitted] = []
        self.undecodable_examples = 0
        self.deadletters: list[dict[str, Any]] = []
        self._consumer: Consumer | None = None

    def _assign(self) -> Consumer:
        consumer = Consumer(consumer_config(self.settings, group_id="loopline-faults-ledger"))
        wanted = []
        for name in ("examples", "deadletter"):
            topic = self.settings.topic(name)
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            wanted += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        consumer.assign(wanted)
        return consumer

    def update(self, seconds: float = 0.5) -> int:
        """Read what arrived since the last call; how many records that was."""
        if self._consumer is None:
            self._consumer = self._assign()
        examples_topic = self.settings.topic("examples")
        read = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = self._consumer.consume(5000, 0.1)
            if not batch and read:
                break
            for msg in batch:
                if msg.error() is not None:
                    continue
                read += 1
                if msg.topic() == examples_topic:
                    self._example(msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value())
                else:
                    pairs = cast(list[tuple[str, bytes | None]], msg.headers() or [])
                    headers = [(k, v) for k, v in pairs if v is not None]
                    self._deadletter(msg.key(), msg.value(), headers)
        return read

    def _example(self, partition: int, offset: int, key: bytes | None, raw: bytes | None) -> None:
        """Counted as the trainer decodes it: poison on ``examples`` is not an example."""
        try:
            example = Example.from_json(raw or b"")
        except RecordError:
            self.undecodable_examples += 1
            return
        self.examples.append(
            Emitted(
                partition,
                offset,
                example.event_id,
                example.label,
                example.label_observed,
                key,
                raw or b"",
            )
        )

    def _deadletter(
        self, key: bytes | None, raw: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        record: dict[str, Any] = {k: v.decode(errors="replace") for k, v in headers}
        record["key"], record["value"] = key, raw
        try:
            obj = orjson.loads(raw or b"")
            record["event_id"] = obj.get("event_id") if isinstance(obj, dict) else None
        except orjson.JSONDecodeError:
            record["event_id"] = None
        self.deadletters.append(record)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    # -- counts -------------------------------------------------------------------

    def example_ids(self) -> Counter[str]:
        return Counter(e.event_id for e in self.examples)

    def deadlettered_events(self) -> set[str]:
        events = self.settings.topic("events")
        return {
            str(d["event_id"])
            for d in self.deadletters
            if d.get("source_topic") == events and d.get("event_id")
        }

    def lost(self, published: list[str]) -> list[str]:
        emitted = self.example_ids()
        dead = self.deadlettered_events()
        return [i for i in dict.fromkeys(published) if i not in emitted and i not in dead]

    def mislabelled(self, published: list[str]) -> list[str]:
        """Published events whose example lacks the label published for them: the label
        was lost (deadlettered, or the default applied although it came in time)."""
        wanted = set(published)
        first: dict[str, Emitted] = {}
        for e in self.examples:
            if e.event_id in wanted:
                first.setdefault(e.event_id, e)
        return [i for i, e in first.items() if not e.label_observed or e.label != expected_label(i)]

    def emitted_twice(self) -> int:
        return sum(n - 1 for n in self.example_ids().values() if n > 1)

    def wait(
        self,
        published: list[str],
        timeout: float,
        quiet: float = 2.0,
        tick: Callable[[], object] | None = None,
    ) -> float:
        """Read until every published id is accounted for (then ``quiet`` seconds more, so
        that late duplicates show) or time ran out; the seconds it took. ``tick`` runs on
        every round (a supervisor)."""
        start = time.monotonic()
        deadline = start + timeout
        done_at: float | None = None
        while time.monotonic() < deadline:
            if tick is not None:
                tick()
            self.update()
            now = time.monotonic()
            if done_at is None and not self.lost(published):
                done_at = now
            if done_at is not None and now - done_at >= quiet:
                break
        return (done_at or time.monotonic()) - start


def learned_twice(settings: Settings, ledger: Ledger, model: str) -> dict[str, int]:
    """Per lineage, examples its newest checkpoint learned (plus holdout) beyond the
    distinct event ids on ``examples`` below that checkpoint's offsets."""
    store = CheckpointStore.of(settings)
    newest: dict[str, CheckpointManifest] = {}
    for m in store.manifests(model):
        if m.lineage not in newest or m.created_at > newest[m.lineage].created_at:
            newest[m.lineage] = m
    result: dict[str, int] = {}
    for lineage, m in newest.items():
        below = {e.event_id for e in ledger.examples if e.offset < m.offsets.get(e.partition, 0)}
        seen = m.examples_seen + int(m.metrics.get("examples_holdout") or 0)
        result[lineage] = seen - len(below)
    return result


def checkpointed_to_end(settings: Settings, model: str, ledger: Ledger) -> bool:
    """The newest checkpoint's offsets cover every example the ledger has read."""
    store = CheckpointStore.of(settings)
    manifests = store.manifests(model)
    if not manifests:
        return False
    ends: dict[int, int] = {}
    for e in ledger.examples:
        ends[e.partition] = max(ends.get(e.partition, 0), e.offset + 1)
    newest = max(manifests, key=lambda m: m.created_at)
    return all(newest.offsets.get(p, 0) >= end for p, end in ends.items())


# -- the books -----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What ``loopline accounting`` said."""

    balanced: bool
    exit_code: int
    output: str


def accounting_cli(settings: Settings, timeout: float = 60) -> Verdict:
    """Run the real ``loopline accounting`` against these settings."""
    proc = subprocess.run(
        [sys.executable, "-m", "loopline", "accounting"],
        env=settings.process_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    out = proc.stdout + proc.stderr
    # "books balance for what was read; N events not yet read" claims no balance.
    balanced = proc.returncode == 0 and re.search(r"^books balance$", out, re.M) is not None
    return Verdict(balanced, proc.returncode, out)


def unprocessed(settings: Settings) -> int:
    """Events on the broker that the books do not show as read (the lag), or that are
    still pending; negative when the books claim more than the broker holds."""
    books = accounting.read(settings)
    published = topic_sizes(settings, ("events",)).get("events", 0)
    return published - books.get("events") + books.get("pending")


@dataclass(frozen=True)
class Probe:
    """What ``loopline accounting`` said while a fault held work up, and how fast."""

    balanced: bool
    seconds: float
    exit_code: int


def probe_books(settings: Settings) -> Probe:
    """Ask the books while a fault holds records unprocessed: they must answer, and must
    not say they balance."""
    started = time.monotonic()
    verdict = accounting_cli(settings)
    return Probe(verdict.balanced, round(time.monotonic() - started, 1), verdict.exit_code)


def record_probes(figures: Figures, probes: list[Probe]) -> None:
    """Probes that found the books balanced while work was held up are false balances."""
    figures.notes["books_during_fault"] = [
        {"balanced": p.balanced, "seconds": p.seconds, "exit_code": p.exit_code} for p in probes
    ]
    figures.notes["false_balance"] += sum(p.balanced for p in probes)


def false_balance(verdict: Verdict, lost: int) -> int:
    """1 when the books said they balance although the ledger found records lost."""
    return int(verdict.balanced and lost > 0)


# -- a scenario's figures ------------------------------------------------------------


@dataclass
class Figures:
    """What one scenario measured."""

    name: str
    lost: int = 0
    emitted_twice: int = 0
    learned_twice: int = 0
    recovery_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.lost + self.emitted_twice + self.learned_twice

    def row(self) -> dict[str, Any]:
        return {
            "lost": self.lost,
            "emitted_twice": self.emitted_twice,
            "learned_twice": self.learned_twice,
            "recovery_s": round(self.recovery_s, 1),
            **self.notes,
        }


@dataclass
class Scenario:
    """One scenario's stack: settings (broker and Redis, shared or private), workers and
    the ledger; torn down in reverse on exit."""

    settings: Settings
    procs: Procs
    ledger: Ledger
    broker: PrivateBroker | None = None
    redis: Managed | None = None

    def figures(
        self, name: str, published: list[str], recovery_s: float, model: str | None = None
    ) -> Figures:
        lost = self.ledger.lost(published)
        mislabelled = self.ledger.mislabelled(published)
        figures = Figures(
            name, len(lost) + len(mislabelled), self.ledger.emitted_twice(), 0, recovery_s
        )
        figures.notes["labels_lost"] = len(mislabelled)
        if mislabelled:
            figures.notes["labels_lost_sample"] = mislabelled[:5]
        if model is not None:
            per_lineage = learned_twice(self.settings, self.ledger, model)
            figures.learned_twice = sum(max(0, n) for n in per_lineage.values())
            figures.notes["lineages"] = len(per_lineage)
            skipped = -sum(min(0, n) for n in per_lineage.values())
            if skipped:
                figures.notes["learned_short"] = skipped
        figures.notes["published"] = len(set(published))
        figures.notes["examples"] = len(self.ledger.examples)
        figures.notes["deadlettered"] = len(self.ledger.deadletters)
        reasons = Counter(
            f"{str(d.get('source_topic', '?')).removeprefix(self.settings.topic_prefix)}:"
            f"{d.get('reason', '?')}"
            for d in self.ledger.deadletters
        )
        if reasons:
            figures.notes["deadletter_reasons"] = dict(reasons.most_common(6))
        if lost:
            figures.notes["lost_sample"] = lost[:5]
        return figures


@contextlib.contextmanager
def scenario(
    base: Settings,
    directory: Path,
    *,
    horizon: float = 4,
    private_broker: bool = False,
    private_redis: bool = False,
) -> Iterator[Scenario]:
    """A scenario's stack: ``base`` settings with a fast spec, optionally a private broker
    (behind a forwarder) and a private Redis."""
    broker = start_private_broker(directory / "broker") if private_broker else None
    server, url = start_private_redis(directory / "redis") if private_redis else (None, "")
    changes: dict[str, Any] = {"spec": fast_spec(directory, horizon)}
    if broker is not None:
        changes["kafka_bootstrap"] = broker.bootstrap
    if server is not None:
        changes["redis_url"] = url
    settings = base.replace(**changes)
    current: Scenario | None = None
    try:
        if broker is not None:
            create_topics(settings)
        current = Scenario(settings, Procs(directory / "logs"), Ledger(settings), broker, server)
        with current.procs:
            yield current
    finally:
        if current is not None:
            current.ledger.close()
            server = current.redis  # a restarted Redis is another process
        if broker is not None:
            broker.stop()
        if server is not None:
            with contextlib.suppress(ProcessLookupError, RuntimeError):
                signal_server(server, signal.SIGCONT)
            server.stop()
