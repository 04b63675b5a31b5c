"""Running real streams workers in tests: a spec variant, a worker process, topic reads."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from loopline import accounting
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC
from tests.kafka_support import read_topic

FAST_HEALTH = {"window_seconds": 3600, "baseline_windows": 3, "min_events": 1000000}


def spec_variant(
    directory: Path,
    label: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
    base: Path = DEFAULT_SPEC,
    entity_features: dict[str, Any] | None = None,
) -> Path:
    """A copy of a spec with some label / health keys (or the entity features) replaced."""
    data = tomllib.loads(base.read_text())
    data["label"].update(label or {})
    if entity_features is not None:
        data["entity"]["features"] = entity_features
    data["health"] = {**data.get("health", {}), **FAST_HEALTH, **(health or {})}
    path = directory / f"spec-{time.monotonic_ns()}.toml"
    path.write_text(to_toml(data))
    return path


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return orjson.dumps(v).decode()  # bool, number and string literals match JSON's


def to_toml(data: dict[str, Any], table: str = "") -> str:
    """A small TOML writer, enough for spec files."""
    lines = [f"[{table}]"] if table else []
    nested = {k: v for k, v in data.items() if isinstance(v, dict) and (not table or k != "params")}
    lines += [f"{k} = {_value(v)}" for k, v in data.items() if k not in nested]
    text = "\n".join(lines) + "\n"
    for k, v in nested.items():
        text += "\n" + to_toml(v, f"{table}.{k}" if table else k)
    return text


def worker_env(settings: Settings) -> dict[str, str]:
    return settings.replace(log_level="INFO").process_env()


def start_worker(settings: Settings, name: str = "w") -> subprocess.Popen[bytes]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    code = "from loopline.cli import main; main()"
    with (settings.state_dir / f"streams-{name}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code, "run", "streams"],
            env=worker_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop_worker(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def worker(settings: Settings, name: str = "w") -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(settings, name)
    try:
        yield proc
    finally:
        stop_worker(proc)


def partitions_taken(settings: Settings, name: str) -> set[int]:
    """Partitions a worker took up, from its log."""
    log = (settings.state_dir / f"streams-{name}.log").read_text()
    return {int(p) for p in re.findall(r"partition (\d+) ready", log)}


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def books(settings: Settings) -> accounting.Accounting:
    return accounting.read(settings)


def wait_books(
    settings: Settings,
    events: int,
    labels: int,
    timeout: float = 60,
    settled: Callable[[accounting.Accounting], bool] | None = None,
) -> accounting.Accounting:
    """Wait until the workers have read this many events and labels (and ``settled`` holds)."""
    result: list[accounting.Accounting] = []

    def check() -> bool:
        b = books(settings)
        result[:] = [b]
        return (
            b.get("events") >= events
            and b.get("labels") >= labels
            and (settled is None or settled(b))
        )

    try:
        wait_for(check, timeout, f"{events} events and {labels} labels to be accounted for")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; books: {result[0].totals if result else None}") from None
    return result[0]


def examples(settings: Settings, expected: int, timeout: float = 30) -> list[dict[str, Any]]:
    return [orjson.loads(m.value()) for m in read_topic(settings, "examples", expected, timeout)]


def deadletters(settings: Settings, expected: int, timeout: float = 30) -> list[dict[str, Any]]:
    out = []
    for m in read_topic(settings, "deadletter", expected, timeout):
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        out.append({"key": m.key(), "value": m.value(), **headers})
    return out
