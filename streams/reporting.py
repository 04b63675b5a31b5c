"""What a streams worker tells Redis, off the examples path: accounting and heartbeat.

Examples need no Redis, so nothing here may stall or fail a batch: writes run on one
background thread, one at a time, each with the latest values (older ones are
superseded, never queued), and a Redis that hangs or dies only delays the books and
the heartbeat. A stale heartbeat is itself the signal: ``loopline status`` shows the
worker as stale rather than healthy.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import redis

from loopline import accounting
from loopline.heartbeat import Heartbeat
from loopline.redis_client import redis_client
from loopline.settings import Settings

log = logging.getLogger("loopline.streams")

REDIS_TIMEOUT_SECONDS = 2.0


class Reporter:
    """Writes accounting and the heartbeat in the background; never blocks, never raises."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="streams-report")
        self._client: redis.Redis | None = None
        self._heartbeat: Heartbeat | None = None
        self._counts: dict[int, accounting.Stamped] = {}
        self._beat: dict[str, Any] | None = None
        self._running: Future[None] | None = None
        self.failing: str | None = None

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis_client(self.settings, timeout=REDIS_TIMEOUT_SECONDS)
        return self._client

    def counts(self, partition: int, counts: accounting.Stamped) -> None:
        """A partition's counts as of one commit (a later one supersedes them)."""
        self._counts[partition] = counts
        self._kick()

    def heartbeat(self, state: dict[str, Any]) -> None:
        self._beat = state
        self._kick()

    def _kick(self) -> None:
        if self._running is not None and not self._running.done():
            return  # the running write picks up what is pending when it finishes
        self._running = self._executor.submit(self._drain)

    def _drain(self) -> None:
        while self._counts or self._beat is not None:
            counts, self._counts = self._counts, {}
            beat, self._beat = self._beat, None
            if counts:
                try:
                    accounting.write(self._redis(), self.settings, counts)
                    self.failing = None
                except redis.RedisError as exc:
                    if self.failing is None:
                        log.warning("accounting not written (retried on the next commit): %s", exc)
                    self.failing = str(exc)
                    for p, value in counts.items():  # keep them unless superseded meanwhile
                        self._counts.setdefault(p, value)
                    return
            if beat is not None:
                if self._heartbeat is None:
                    name = f"streams.{os.uname().nodename}-{os.getpid()}"
                    self._heartbeat = Heartbeat(self.settings, name, client=self._redis())
                self._heartbeat.beat(beat, force=True)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for pending writes (on shutdown)."""
        running = self._running
        if running is not None:
            await asyncio.wait([asyncio.wrap_future(running)], timeout=timeout)

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
