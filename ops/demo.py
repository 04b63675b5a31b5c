"""The yarn-shop demo: the whole loop on the local stack, narrated.

Starts the local stack and every worker as its own process, publishes the shop's
traffic (drift, late and missing labels, broken records, a bot burst), asks serving
for predictions as it goes, and ends with what each part of the loop did.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from loopline.devstack import LocalStack
from loopline.kafka import topic_sizes
from loopline.settings import Settings
from ops.simulator import TrafficReport, run_traffic

WORKERS = ("streams", "trainer", "pusher", "serving")


def installed_workers() -> list[str]:
    return [w for w in WORKERS if importlib.util.find_spec(f"{w}.main") is not None]


@contextmanager
def running_workers(
    settings: Settings, workers: list[str], logs: Path
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Each worker as ``loopline run <worker>``, logs in ``logs``; stopped on exit."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **_settings_env(settings)}
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


def _settings_env(settings: Settings) -> dict[str, str]:
    values = settings.model_dump(mode="json")
    values["signing_key"] = settings.signing_key.get_secret_value()
    if settings.serving_token is not None:
        values["serving_token"] = settings.serving_token.get_secret_value()
    return {f"LOOPLINE_{k.upper()}": str(v) for k, v in values.items() if v is not None}


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


def run_demo(settings: Settings, seconds: float, rate: float, console: Console) -> None:
    console.rule("[bold]Loopline demo: the yarn shop")
    for name, state in LocalStack(settings).up().items():
        console.print(f"[dim]{name}:[/dim] {state}")
    workers = installed_workers()
    console.print(f"workers: {', '.join(workers) or 'none installed'}")
    logs = settings.state_dir / "demo"
    url = f"http://{settings.serving_host}:{settings.serving_port}/predict"
    with running_workers(settings, workers, logs) as procs, httpx.Client(timeout=2.0) as client:
        time.sleep(2.0)

        def tick(report: TrafficReport, elapsed: float) -> None:
            if int(elapsed) % 5:
                return
            dead = [w for w, p in procs.items() if p.poll() is not None]
            serving = _ask_serving(client, url) if "serving" in workers else "serving not installed"
            console.print(
                f"{elapsed:5.0f}s  events {report.events:6d}  clicks {report.clicks:5d}  "
                f"bots {report.bot_events:5d}  broken {report.broken:4d}  | {serving}"
                + (f"  [red]stopped: {', '.join(dead)} (see {logs})[/red]" if dead else "")
            )

        report = run_traffic(settings, seconds=seconds, rate=rate, on_tick=tick)
        horizon = settings.load_spec().label.horizon_seconds
        console.print(f"traffic done; waiting {horizon:g}s for the label horizon to pass")
        time.sleep(min(horizon + 5, 90))
        final = _ask_serving(client, url) if "serving" in workers else "serving not installed"
    table = Table(title="what the loop did", show_header=False)
    for key, value in report.as_dict().items():
        table.add_row(key, str(value))
    for topic, size in topic_sizes(settings).items():
        table.add_row(f"records on {settings.topic(topic)}", str(size))
    table.add_row("serving now answers", final)
    console.print(table)
    console.print(f"worker logs: {logs}; stop the stack with `loopline dev down`")
