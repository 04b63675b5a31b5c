"""What a streams worker tells Redis, off the examples path: accounting and heartbeat.

Examples need no Redis, so nothing here may stall or fail a batch: writes run on one
background thread, one at a time, each with the latest values (older ones are
superseded, never queued), and a Redis that hangs or dies only delays the books and
the heartbeat. A stale heartbeat is itself the signal: ``loopline status`` shows the
worker as stale rather than healthy.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import redis

from loopline import accounting
from loopline.heartbeat import Heartbeat
from loopline.redis_client import redis_client
from loopline.settings import Settings

log = logging.getLogger("loopline.streams")

REDIS_TIMEOUT_SECONDS = 2.0
RETRY_SECONDS = 1.0


class Reporter:
    """Writes accounting and the heartbeat from one thread of its own; never blocks the
    caller, never raises."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: redis.Redis | None = None
        self._heartbeat: Heartbeat | None = None
        self._counts: dict[int, accounting.Stamped] = {}
        self._beat: dict[str, Any] | None = None
        self._changed = threading.Condition()
        self._writing = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.failing: str | None = None

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis_client(self.settings, timeout=REDIS_TIMEOUT_SECONDS)
        return self._client

    def counts(self, partition: int, counts: accounting.Stamped) -> None:
        """A partition's counts as of one commit (a later one supersedes them)."""
        with self._changed:
            self._counts[partition] = counts
            self._start()
            self._changed.notify()

    def heartbeat(self, state: dict[str, Any]) -> None:
        with self._changed:
            self._beat = state
            self._start()
            self._changed.notify()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="streams-report", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not (self._counts or self._beat is not None or self._closed):
                    self._changed.wait()
                if self._closed and not (self._counts or self._beat is not None):
                    return
                counts, self._counts = self._counts, {}
                beat, self._beat = self._beat, None
                self._writing = True
            ok = self._write(counts, beat)
            with self._changed:
                self._writing = False
                if not ok:  # keep what a newer value has not superseded meanwhile
                    for p, value in counts.items():
                        self._counts.setdefault(p, value)
                self._changed.notify_all()
                if not ok:
                    if self._closed:
                        return
                    self._changed.wait(RETRY_SECONDS)

    def _write(self, counts: dict[int, accounting.Stamped], beat: dict[str, Any] | None) -> bool:
        ok = True
        if counts:
            try:
                accounting.write(self._redis(), self.settings, counts)
            except Exception as exc:  # the writer thread must outlive any failure
                if self.failing is None:
                    log.warning("accounting not written (retried): %s", exc)
                self.failing = f"{type(exc).__name__}: {exc}"
                ok = False
            else:
                self.failing = None
        if beat is not None:
            if not ok:
                beat = {
                    **beat,
                    "degraded": beat.get("degraded") or f"accounting not written: {self.failing}",
                }
            try:
                self._beat_once(beat)
            except Exception:
                log.exception("heartbeat not written")
        return ok

    def _beat_once(self, beat: dict[str, Any]) -> None:
        if self._heartbeat is None:
            name = f"streams.{os.uname().nodename}-{os.getpid()}"
            self._heartbeat = Heartbeat(self.settings, name, client=self._redis())
        self._heartbeat.beat(beat, force=True)

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until everything handed over is written (on shutdown)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._counts or self._beat is not None or self._writing:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._changed.wait(left)
        return True

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._heartbeat is not None:
            self._heartbeat.close()
        if self._client is not None:
            self._client.close()
