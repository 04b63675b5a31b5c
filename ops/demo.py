"""The yarn-shop demo: the whole loop on the local stack, narrated.

It starts the local stack and every worker as its own process, in a namespace of its
own (topic prefix, Redis keys, checkpoints), so every run starts from nothing. The
shop's traffic runs in a thread while the story moves through its chapters:

1. the shop opens: features update, the first labels arrive, v1 learns and serves;
2. bots flood the shop: the data-health monitor pauses training;
3. the operator fences the burst off as an anomalous window and resumes;
4. version 2 of the model is deployed (a new spec version, same features): its
   checkpoints qualify and it ramps through the spec's stages while traffic goes on;
5. the operator rolls it back, and serving answers from v1 again;
6. the last labels' horizon passes, and the books are shown to balance.

It ends with a summary table and a PNG of the run (``ops.demo_plot``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column

from loopline import accounting
from loopline.contracts import utcnow
from loopline.devstack import LocalStack, free_port, port_open
from loopline.errors import LooplineError
from loopline.routing import RampStatus
from loopline.settings import Settings
from ops.demo_narrate import clock, narrate
from ops.demo_operator import Operator
from ops.demo_plot import plot
from ops.demo_probe import ServingProbe
from ops.demo_spec import V2_MODEL, changes, write_specs
from ops.demo_summary import Ending, summary_table
from ops.demo_timeline import Mark, Timeline, TrafficSample
from ops.demo_watch import Watch
from ops.demo_workers import Workers, installed_workers
from ops.simulator import TrafficThread

TICK_SECONDS = 1.0
STATUS_EVERY = 10  # ticks between two status lines


@dataclass(frozen=True, slots=True)
class Plan:
    """The demo's pace, in seconds. The bots come once the streams' data-health monitor
    has its baseline (the spec's ``health`` windows), so that it can tell."""

    rate: float = 100.0
    burst: float = 15.0
    dwell_seconds: float = 10.0
    max_traffic: float = 330.0  # also the span of the shop's drift
    catch_up_timeout: float = 150.0
    after_promotion: float = 8.0
    probes_per_tick: int = 3  # few enough that guardrails never see min_samples


class Story:
    """One demo run: ticks once a second, looking at the loop and narrating it."""

    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        console: Console,
        progress: Progress,
        workers: Workers,
        run_dir: Path,
    ) -> None:
        self.settings, self.plan, self.console = settings, plan, console
        self.progress, self.workers, self.run_dir = progress, workers, run_dir
        self.traffic = TrafficThread(settings, seconds=plan.max_traffic, rate=plan.rate)
        self.timeline = Timeline(started=utcnow())
        self.watch = Watch(settings, self.timeline)
        self.probe = ServingProbe(settings)
        self.operator = Operator(settings, console)
        self.answers: Counter[str] = Counter()  # sampled since the last status line
        self.ticks = 0
        self._counted = (0, 0, time.monotonic())
        self._dead: set[str] = set()
        self._features_seen = False
        self.books = accounting.Accounting()

    def close(self) -> None:
        self.watch.close()
        self.probe.close()

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{clock(self.timeline.started, utcnow())}[/dim] {text}")

    # -- each second -----------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        news = self.watch.poll()
        narrate(self.console, self.watch, news)
        self.operator.look(news.commands)
        self._sample_traffic()
        self.answers.update(self.probe.sample(self.plan.probes_per_tick))
        if self.ticks % STATUS_EVERY == 0:
            self._status()
        for name in set(self.workers.stopped()) - self._dead:
            self._dead.add(name)
            self.say(f"[red]worker {name} stopped; see {self.workers.log(name)}[/red]")
        if self.traffic.failed is not None and "traffic" not in self._dead:
            self._dead.add("traffic")
            self.say(f"[red]the shop's traffic stopped: {escape(repr(self.traffic.failed))}[/red]")

    def _sample_traffic(self) -> None:
        report, now = self.traffic.report, time.monotonic()
        events, bots, then = self._counted
        shoppers = report.events - report.bot_events
        seconds = max(now - then, 1e-3)
        self.timeline.traffic.append(
            TrafficSample(
                utcnow(), (shoppers - events) / seconds, (report.bot_events - bots) / seconds
            )
        )
        self._counted = (shoppers, report.bot_events, now)

    def _status(self) -> None:
        books = accounting.read(self.settings)
        rows = self.watch.feature_rows()
        served = ", ".join(f"{n} {self.watch.name(s)}" for s, n in self.answers.most_common())
        self.answers.clear()
        features = "" if rows is None else f" · {rows:,} feature rows written"
        if rows and not self._features_seen:
            self._features_seen = True
            self.say("[green]features: the streams keep each shopper's features in Redis[/green]")
        self.say(
            f"streams: {books.get('events'):,} events → {books.get('examples'):,} examples, "
            f"{books.get('deadlettered'):,} deadlettered, {books.get('pending'):,} waiting "
            f"for their label{features} · serving answered: {served}"
        )

    # -- chapters ----------------------------------------------------------------------

    def chapter(
        self,
        title: str,
        until: Callable[[], bool],
        *,
        timeout: float,
        total: float | None = None,
        done: Callable[[], float] | None = None,
        info: Callable[[], str] | None = None,
    ) -> bool:
        """Tick until ``until()`` or ``timeout`` seconds, showing a progress bar."""
        task: TaskID = self.progress.add_task(title, total=total, info="")
        started = time.monotonic()
        while True:
            tick_started = time.monotonic()
            self.tick()
            finished = until()
            elapsed = time.monotonic() - started
            self.progress.update(
                task,
                completed=done() if done else elapsed,
                info=info() if info else self.traffic.info(),
            )
            if finished or elapsed > timeout:
                break
            time.sleep(max(0.0, TICK_SECONDS - (time.monotonic() - tick_started)))
        if not finished:
            self.say(f"[red]{title}: still not there after {timeout:g}s; the story goes on[/red]")
        whole = total if total is not None else max(elapsed, 1.0)
        self.progress.update(task, total=whole, completed=whole if finished else None)
        return finished

    def traffic_until(self, title: str, second: float) -> None:
        start = self.traffic.elapsed
        self.chapter(
            title,
            lambda: self.traffic.elapsed >= second,
            timeout=second - start + 10,
            total=second - start,
            done=lambda: min(self.traffic.elapsed - start, second - start),
        )

    def deploy_v2(self, spec: Path) -> None:
        params = ", ".join(f"{k}={v}" for k, v in V2_MODEL["params"].items())
        self.say(
            f"[cyan]operator: deploy version 2 of the model ({V2_MODEL['factory']} with {params}, "
            f"same features): stop the v1 trainer, start one on the v2 spec[/cyan]"
        )
        self.console.print("[bold cyan]$ kill -TERM <trainer v1>[/bold cyan]")
        self.workers.stop("trainer-v1")
        self.console.print(
            f"[bold cyan]$ LOOPLINE_SPEC={escape(str(spec))} loopline run trainer[/bold cyan]"
        )
        self.workers.start("trainer-v2", "trainer", self.settings.replace(spec=spec))
        self.timeline.marks.append(Mark(utcnow(), "v2 deployed"))

    def v2_ramping(self) -> bool:
        ramp = self.watch.ramp
        return ramp is not None and self.watch.version(ramp.candidate) == "v2"

    def ramp_done(self) -> float:
        ramp = self.watch.ramp
        if ramp is None:
            return 0.0
        if not ramp.active:
            return float(len(ramp.stages))
        return ramp.stage + min(ramp.dwell(utcnow()) / ramp.dwell_seconds, 1.0)

    def ramp_info(self) -> str:
        ramp = self.watch.ramp
        if ramp is None:
            return ""
        return f"{self.watch.name(ramp.candidate)} at {ramp.percent:g}% · {ramp.status.value}"

    def streams_reading(self) -> bool:
        return accounting.read(self.settings).get("events") > 0

    def schedule_bots(self, after: float) -> None:
        """Bots from ``after`` seconds from now, for the plan's burst; the operator's
        dashboard shows when."""
        start = self.traffic.elapsed + after
        self.traffic.bots.schedule(start, start + self.plan.burst)
        self.operator.burst = (self.traffic.at(start), self.traffic.at(start + self.plan.burst))
        self.say(
            f"bots will flood the shop from +{self.timeline.seconds(self.operator.burst[0]):.0f}s "
            f"for {self.plan.burst:g}s, once the data-health monitor has its baseline"
        )

    def last_champion(self, version: str) -> str | None:
        for _, checkpoint_id in reversed(self.watch.champions):
            if self.watch.version(checkpoint_id) == version:
                return checkpoint_id
        return None

    def rollback(self) -> tuple[str, str | None]:
        v1 = self.last_champion("v1")
        self.say(
            f"[cyan]operator: drill: take the v2 promotion back to v1's last champion "
            f"{escape(self.watch.name(v1))}[/cyan]"
        )
        store = self.watch.routing
        try:
            table = self.operator.rollback(store, "drill: back to v1 after the v2 promotion", v1)
        except LooplineError as exc:
            self.say(f"[red]rollback refused: {escape(str(exc))}[/red]")
            return f"refused: {exc}", None
        self.timeline.marks.append(
            Mark(utcnow(), f"rollback to {self.watch.version(table.champion)}")
        )
        return (
            f"to {self.watch.name(table.champion)} by the operator; "
            f"pinned, so v2's next checkpoints are held",
            table.champion,
        )

    def serving_follows(self, target: str | None) -> Counter[str]:
        answers: Counter[str] = Counter()

        def all_from_target() -> bool:
            answers.clear()
            answers.update(self.probe.sample(10))
            return target is not None and set(answers) == {target}

        self.chapter("serving follows rollback", all_from_target, timeout=30, total=None)
        return answers

    def books_balanced(self) -> bool:
        self.books = accounting.read(self.settings)
        books = self.books
        return books.get("pending") == 0 and books.events_balance == 0 and books.labels_balance == 0

    def books_info(self) -> str:
        pending = self.books.get("pending")
        return f"{pending:,} events waiting for their label" if pending else "every event settled"


def _namespace(settings: Settings) -> tuple[Settings, Path]:
    """The run's own topic prefix, Redis keys, checkpoints and state: a run starts empty."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = settings.state_dir / "demo" / stamp
    # The demo runs on the local stack with the development keys: explicitly development.
    run = settings.replace(
        env="dev",
        topic_prefix=f"{settings.topic_prefix}demo-{stamp}.",
        state_dir=run_dir,
        checkpoint_dir=run_dir / "checkpoints",
    )
    if port_open(run.serving_host, run.serving_port):
        run = run.replace(serving_port=free_port())
    return run, run_dir


def run_demo(settings: Settings, console: Console, plan: Plan | None = None) -> None:
    plan = plan or Plan()
    console.rule("[bold]Loopline demo: the yarn shop")
    run, run_dir = _namespace(settings)
    specs = write_specs(run_dir / "specs", dwell_seconds=plan.dwell_seconds)
    run = run.replace(spec=specs.v1)
    stack = LocalStack(settings.replace(topic_prefix=run.topic_prefix))
    for name, state in stack.up().items():
        console.print(f"[dim]{name}: {escape(state)}[/dim]")
    console.print(
        f"run namespace {run.topic_prefix} · serving on port {run.serving_port} · "
        f"specs {specs.v1.parent}: {specs.v1.name} at demo pace "
        f"({', '.join(changes(dwell_seconds=plan.dwell_seconds))}) and {specs.v2.name}"
    )
    missing = set(("streams", "trainer", "pusher", "serving")) - set(installed_workers())
    if missing:
        raise LooplineError(f"workers not installed: {', '.join(sorted(missing))}")
    streams_port = free_port()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", table_column=Column(no_wrap=True, min_width=26)),
        BarColumn(bar_width=16, table_column=Column(min_width=16)),
        TimeElapsedColumn(table_column=Column(min_width=7)),
        TextColumn(
            "[dim]{task.fields[info]}", table_column=Column(no_wrap=True, overflow="ellipsis")
        ),
        console=console,
    )
    with Workers(run_dir / "logs") as workers, progress:
        workers.start("streams", "streams", run.replace(metrics_port=streams_port))
        workers.start("trainer-v1", "trainer", run)
        workers.start("pusher", "pusher", run)
        workers.start("serving", "serving", run)
        story = Story(run, plan, console, progress, workers, run_dir)
        story.watch.streams_metrics = f"http://127.0.0.1:{streams_port}/metrics"
        try:
            ending = _tell(story, specs.v2)
        finally:
            story.traffic.stop()
            story.close()
    console.print(summary_table(story.watch, ending, story.timeline.started))
    console.print(f"worker logs: {run_dir / 'logs'}; stop the stack with `loopline dev down`")
    console.print(
        f"look around: LOOPLINE_TOPIC_PREFIX={run.topic_prefix} "
        f"LOOPLINE_CHECKPOINT_DIR={run.checkpoint_dir} LOOPLINE_SPEC={specs.v1} loopline history"
    )


def _tell(story: Story, v2_spec: Path) -> Ending:
    plan, traffic = story.plan, story.traffic
    health = story.settings.load_spec().health
    time.sleep(2.0)  # let the workers come up before the first events
    traffic.start()
    story.say(f"the shop opens: {plan.rate:g} impressions/s, 2% of them broken records")
    story.chapter("streams join", story.streams_reading, timeout=120)
    warmup = health.window_seconds * (health.baseline_windows + 0.5)
    story.schedule_bots(warmup)
    story.traffic_until("the shop opens, v1 learns", traffic.bots.start)
    story.traffic_until("bots flood the shop", traffic.bots.end)
    story.chapter(
        "operator fences the burst",
        lambda: story.operator.fenced,
        timeout=60,
    )
    story.deploy_v2(v2_spec)
    story.chapter(
        "v2 deployed, qualifying",
        story.v2_ramping,
        timeout=plan.catch_up_timeout,
    )
    stages = len(story.watch.ramp.stages) if story.watch.ramp is not None else 5
    story.chapter(
        "v2 ramps 1% → 100%",
        lambda: story.watch.ramp is not None and not story.watch.ramp.active,
        timeout=stages * plan.dwell_seconds + 60,
        total=float(stages),
        done=story.ramp_done,
        info=story.ramp_info,
    )
    ramp = story.watch.ramp
    promoted = ramp is not None and ramp.status is RampStatus.PROMOTED
    if ramp is not None and ramp.status in (RampStatus.PROMOTED, RampStatus.ROLLED_BACK):
        story.timeline.marks.append(Mark(ramp.updated_at, f"v2 {ramp.status.value}"))
    title = "v2 serves everyone" if promoted else "the shop goes on"
    story.traffic_until(title, traffic.elapsed + plan.after_promotion)
    traffic.stop()
    story.say(f"the shop closes after {traffic.elapsed:.0f}s of traffic: {traffic.info()}")
    rollback, target = story.rollback()
    answers = story.serving_follows(target)
    horizon = story.settings.load_spec().label.horizon_seconds
    story.chapter(
        "last labels' horizon",
        story.books_balanced,
        timeout=horizon + 30,
        info=story.books_info,
    )
    story.tick()
    story.timeline.ended = utcnow()
    path = plot(story.timeline, story.run_dir / "demo.png")
    story.say(f"plot written to {path}")
    return Ending(
        traffic=traffic.report,
        books=accounting.read(story.settings),
        feature_rows=story.watch.feature_rows(),
        rollback=rollback,
        rollback_target=target,
        answers=answers,
        final=story.probe.ask("user-1"),
        plot=str(path),
    )
