"""The yarn-shop demo: the whole loop on the local stack, narrated.

Starts the local stack and every worker as its own process, publishes the shop's
traffic (drift, late and missing labels, broken records, a bot burst), asks serving
for predictions as it goes, and ends with what each part of the loop did.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from loopline import accounting
from loopline.contracts import CommandKind
from loopline.control import make_command, read_all, send
from loopline.devstack import LocalStack
from loopline.kafka import topic_sizes
from loopline.settings import Settings
from ops.simulator import TrafficReport, run_traffic

WORKERS = ("streams", "trainer", "pusher", "serving")
BOT_WINDOW = (
    0.6,
    0.75,
)  # share of the run during which bots flood the shop (after the monitor warms up)
OPERATOR = "demo-operator"


def installed_workers() -> list[str]:
    return [w for w in WORKERS if importlib.util.find_spec(f"{w}.main") is not None]


@contextmanager
def running_workers(
    settings: Settings, workers: list[str], logs: Path
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Each worker as ``loopline run <worker>``, logs in ``logs``; stopped on exit."""
    logs.mkdir(parents=True, exist_ok=True)
    env = settings.process_env()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for worker in workers:
            with (logs / f"{worker}.log").open("ab") as log:
                procs[worker] = subprocess.Popen(
                    [sys.executable, "-m", "loopline", "run", worker],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        yield procs
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ask_serving(client: httpx.Client, url: str) -> str:
    try:
        response = client.post(
            url,
            json={
                "entity_id": "user-1",
                "features": {"price": 18.0, "category": "alpaca", "hour": 12, "device": "desktop"},
            },
        )
    except httpx.HTTPError as exc:
        return f"serving not answering ({type(exc).__name__})"
    if response.status_code != 200:
        return f"serving said {response.status_code}"
    body = response.json()
    source = "fallback" if body.get("fallback") else f"model {body.get('model_version')}"
    return f"p(click)={body.get('score', 0):.3f} from {source}"


class Operator:
    """What an on-call engineer does during the demo: read the monitor's auto-pause,
    fence off the bot burst once it is over, and resume training."""

    def __init__(
        self, settings: Settings, burst: tuple[datetime, datetime], console: Console
    ) -> None:
        self.settings, self.burst, self.console = settings, burst, console
        self.seen: set[str] = set()
        self.paused_by_monitor = False
        self.fenced = False

    def look(self) -> None:
        for command in read_all(self.settings):
            if command.command_id in self.seen:
                continue
            self.seen.add(command.command_id)
            if command.kind is CommandKind.PAUSE and command.issued_by != OPERATOR:
                breaches = ", ".join(
                    b.get("check", "?") for b in command.evidence.get("breaches", [])
                )
                self.console.print(
                    f"[yellow]auto-pause by {command.issued_by}: {breaches or command.reason}[/yellow]"
                )
                if self.fenced:  # the burst's own labels arrive a horizon later: known, fenced
                    self._resume("after-effect of the fenced bot burst")
                else:
                    self.paused_by_monitor = True
        now = datetime.now(UTC)
        burst_over = now > self.burst[1] + timedelta(seconds=5)
        if (
            self.fenced
            or not burst_over
            or (not self.paused_by_monitor and now < self.burst[1] + timedelta(seconds=30))
        ):
            return
        start, end = self.burst[0] - timedelta(seconds=5), self.burst[1] + timedelta(seconds=5)
        args = {"start": start.isoformat(), "end": end.isoformat()}
        send(
            self.settings,
            make_command(
                CommandKind.MARK_ANOMALOUS, reason="bot burst", issued_by=OPERATOR, args=args
            ),
        )
        self.fenced = True
        self.console.print(
            f"[cyan]operator: marked {start:%H:%M:%S}-{end:%H:%M:%S} anomalous (bot burst)[/cyan]"
        )
        self._resume("bot burst fenced off")

    def _resume(self, reason: str) -> None:
        send(self.settings, make_command(CommandKind.RESUME, reason=reason, issued_by=OPERATOR))
        self.console.print(f"[cyan]operator: resumed training ({reason})[/cyan]")


def run_demo(settings: Settings, seconds: float, rate: float, console: Console) -> None:
    console.rule("[bold]Loopline demo: the yarn shop")
    for name, state in LocalStack(settings).up().items():
        console.print(f"[dim]{name}:[/dim] {state}")
    workers = installed_workers()
    console.print(f"workers: {', '.join(workers) or 'none installed'}")
    logs = settings.state_dir / "demo"
    url = f"http://{settings.serving_host}:{settings.serving_port}/predict"
    # One request every 5 s would race uvicorn's 5 s keep-alive timeout: fresh connections.
    fresh = httpx.Limits(max_keepalive_connections=0)
    with (
        running_workers(settings, workers, logs) as procs,
        httpx.Client(timeout=2.0, limits=fresh) as client,
    ):
        time.sleep(2.0)
        started = datetime.now(UTC)
        burst = (
            started + timedelta(seconds=seconds * BOT_WINDOW[0]),
            started + timedelta(seconds=seconds * BOT_WINDOW[1]),
        )
        console.print(
            f"traffic for {seconds:g}s at {rate:g}/s; bots from {burst[0]:%H:%M:%S} to {burst[1]:%H:%M:%S}"
        )
        operator = Operator(settings, burst, console)

        def tick(report: TrafficReport, elapsed: float) -> None:
            if int(elapsed) % 5:
                return
            operator.look()
            dead = [w for w, p in procs.items() if p.poll() is not None]
            serving = _ask_serving(client, url) if "serving" in workers else "serving not installed"
            console.print(
                f"{elapsed:5.0f}s  events {report.events:6d}  clicks {report.clicks:5d}  "
                f"bots {report.bot_events:5d}  broken {report.broken:4d}  | {serving}"
                + (f"  [red]stopped: {', '.join(dead)} (see {logs})[/red]" if dead else "")
            )

        report = run_traffic(
            settings, seconds=seconds, rate=rate, bot_window=BOT_WINDOW, on_tick=tick
        )
        horizon = settings.load_spec().label.horizon_seconds
        console.print(f"traffic done; waiting {horizon:g}s for the last labels' horizon")
        deadline = time.monotonic() + min(horizon + 10, 120)
        while time.monotonic() < deadline:
            operator.look()
            time.sleep(5)
        final = _ask_serving(client, url) if "serving" in workers else "serving not installed"
    table = Table(title="what the loop did", show_header=False)
    for key, value in report.as_dict().items():
        table.add_row(key, str(value))
    for topic, size in topic_sizes(settings).items():
        table.add_row(f"records on {settings.topic(topic)}", str(size))
    books = accounting.read(settings)
    outcomes = ", ".join(f"{name} {books.get(name)}" for name in accounting.EVENT_OUTCOMES)
    balanced = books.events_balance == 0 and books.labels_balance == 0
    table.add_row("events read by the streams", f"{books.get('events')}: {outcomes}")
    table.add_row(
        "books balance",
        "yes"
        if balanced
        else f"no: events {books.events_balance:+d}, labels {books.labels_balance:+d}",
    )
    table.add_row("serving now answers", final)
    console.print(table)
    console.print(f"worker logs: {logs}; stop the stack with `loopline dev down`")
