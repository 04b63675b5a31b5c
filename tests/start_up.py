"""Start ``loopline run <worker>`` once in a child process and read what it said."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping


def run_worker(worker: str, env: Mapping[str, str]) -> tuple[int, str]:
    """The exit status and the output (whitespace folded) of a worker that should stop."""
    result = subprocess.run(
        [sys.executable, "-m", "loopline", "run", worker],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, " ".join((result.stdout + result.stderr).split())
