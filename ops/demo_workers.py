"""The demo's workers: each a ``loopline run <worker>`` process with its own log.

Workers are named (``trainer-v1``, ``trainer-v2``, ...) so the demo can stop one and
start another on a different spec while the rest keep running.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from loopline.settings import Settings

WORKERS = ("streams", "trainer", "pusher", "serving")


def installed_workers() -> list[str]:
    return [w for w in WORKERS if importlib.util.find_spec(f"{w}.main") is not None]


class Workers:
    """Named worker processes; every one still running is stopped on exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(self, name: str, worker: str, settings: Settings) -> None:
        """Start ``loopline run <worker>`` with ``settings`` as its environment."""
        with self.log(name).open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "loopline", "run", worker],
                env=settings.process_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        proc = self.procs.pop(name)
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def stopped(self) -> list[str]:
        """Workers that exited on their own."""
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for name in list(self.procs):
            self.stop(name, 15.0)
