"""The one way a Loopline process opens a Redis client: every wait is bounded.

A Redis that stops answering (paused, overloaded, cut off by the network) must turn
into a :class:`redis.TimeoutError` after ``LOOPLINE_REDIS_TIMEOUT_SECONDS``, never into
a process that hangs in a socket read. A refused or reset connection (Redis
restarting) is retried ``LOOPLINE_REDIS_RETRIES`` times with jittered backoff; a
timeout is not retried, so one call against a hung Redis fails within about one
timeout (plus the connect timeout when it had to reconnect first). Connections idle
for ``LOOPLINE_REDIS_HEALTH_CHECK_SECONDS`` are pinged before reuse, so one that died
quietly is replaced instead of failing the next command.

>>> from loopline.settings import Settings
>>> client = redis_client(Settings.from_env({}), timeout=0.5)
>>> client.connection_pool.connection_kwargs["socket_timeout"]
0.5
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from loopline.settings import Settings

#: Backoff between retries of a refused connection: ~50 ms doubling to at most 1 s.
_BACKOFF_BASE, _BACKOFF_CAP = 0.05, 1.0


def redis_client(settings: Settings, *, timeout: float | None = None) -> redis.Redis:
    """A client for ``settings.redis_url``; ``timeout`` overrides the configured one
    (serving uses a shorter one: a slow Redis must become a fallback answer)."""
    wait = settings.redis_timeout_seconds if timeout is None else timeout
    retry = Retry(
        ExponentialWithJitterBackoff(base=_BACKOFF_BASE, cap=_BACKOFF_CAP),
        settings.redis_retries,
        supported_errors=(redis.ConnectionError,),
    )
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=wait,
        socket_connect_timeout=min(wait, settings.redis_connect_timeout_seconds),
        health_check_interval=settings.redis_health_check_seconds,
        retry=retry,
    )
