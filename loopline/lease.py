"""Leases: at most one live holder of a role at a time, kept in Redis.

One key per role, ``<prefix>lease:<name>`` (for a trainer ``trainer.<model>.v<spec
version>``, see :func:`trainer_lease_name`), holding a JSON object: a random ``token``
and who holds it (``host``, ``pid``, ``since``). It is taken with ``SET NX PX``,
renewed and released only by compare-and-set scripts that check the token, so a
holder that was paused past the TTL and lost the lease can neither extend nor delete
its successor's. A holder that cannot renew (Redis down or slow) treats the lease as
lost once it may have expired: the TTL measured from before its last renewal.

>>> trainer_lease_name("shop_clicks", 2)
'trainer.shop_clicks.v2'
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import redis

from loopline.contracts import parse_ts, utcnow
from loopline.errors import LeaseHeld, LeaseLost, RecordError
from loopline.redis_client import redis_client
from loopline.settings import Settings

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def lease_key(settings: Settings, name: str) -> str:
    return settings.key("lease", name)


def trainer_lease_name(model: str, spec_version: int) -> str:
    """The lease of one model version's trainer."""
    return f"trainer.{model}.v{spec_version}"


@dataclass(frozen=True, slots=True)
class Holder:
    token: str
    host: str
    pid: int
    since: datetime

    def describe(self) -> str:
        return f"{self.host} pid {self.pid} since {self.since.isoformat(timespec='seconds')}"

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"token": self.token, "host": self.host, "pid": self.pid, "since": self.since}
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Holder | None:
        try:
            obj = orjson.loads(raw)
            return cls(
                str(obj["token"]),
                str(obj["host"]),
                int(obj["pid"]),
                parse_ts(obj["since"], "since"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, RecordError):
            return None


class Lease:
    """One process's claim on a named lease.

    ``acquire`` once, then ``keep`` from the work loop (it renews every third of the
    TTL and raises :class:`LeaseLost` if the lease is gone); ``confirm`` right before
    making work durable; ``release`` on a clean stop.
    """

    def __init__(
        self, settings: Settings, name: str, ttl: float, client: redis.Redis | None = None
    ) -> None:
        self.name = name
        self.key = lease_key(settings, name)
        self.ttl = ttl
        # A renewal must fail well inside the TTL, whatever the configured timeout.
        timeout = min(settings.redis_timeout_seconds, ttl / 6)
        self._client: Any = client or redis_client(settings, timeout=timeout)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)
        self.holder: Holder | None = None
        self._value = b""
        self._renewed = float("-inf")  # monotonic time before the last good renewal
        self._failing = False
        self._lost: LeaseLost | None = None

    @property
    def held(self) -> bool:
        """Ours, as far as we know: acquired, not lost, not yet possibly expired."""
        return self.holder is not None and time.monotonic() < self._renewed + self.ttl

    def current(self) -> Holder | None:
        """Who holds the lease now, if anyone."""
        raw = self._client.get(self.key)
        return None if raw is None else Holder.from_json(raw)

    def acquire(self, wait: float = 0.0, poll: float = 0.2) -> Holder:
        """Take the lease, waiting up to ``wait`` seconds for a holder's lease to lapse
        (a holder that died without releasing it); :class:`LeaseHeld` naming the holder
        if it is still held then."""
        holder = Holder(secrets.token_hex(16), socket.gethostname(), os.getpid(), utcnow())
        value = holder.to_json()
        deadline = time.monotonic() + wait
        while True:
            started = time.monotonic()
            taken = self._client.set(self.key, value, nx=True, px=int(self.ttl * 1000))
            # A retried SET may find the value its lost first attempt wrote.
            if taken or self._client.get(self.key) == value:
                self.holder, self._value, self._renewed = holder, value, started
                log.info("took lease %s (ttl %gs)", self.key, self.ttl)
                return holder
            if time.monotonic() >= deadline:
                other = self.current()
                who = other.describe() if other is not None else "another process"
                msg = f"lease {self.name} is held by {who}; only one may run at a time"
                raise LeaseHeld(msg, other)
            time.sleep(poll)

    def due(self) -> bool:
        return time.monotonic() - self._renewed >= self.ttl / 3

    def keep(self) -> None:
        """Renew if a third of the TTL has passed; LeaseLost if the lease is not ours.

        A renewal that fails on Redis is retried on the next call while the lease
        cannot have expired yet.
        """
        if self.holder is None:
            raise self._gone()
        if not self.due():
            return
        try:
            self._extend()
        except (redis.RedisError, OSError) as exc:
            if not self.held:
                raise self._lose(
                    f"lease {self.name}: could not renew it for {self.ttl:g}s ({exc}); "
                    "another process may hold it now"
                ) from None
            if not self._failing:
                log.warning("lease %s renewal failed (retrying): %s", self.key, exc)
            self._failing = True

    def confirm(self) -> bool:
        """Renew now, before work becomes durable: True if the lease is ours for a whole
        TTL from now, False if Redis could not say (do not make the work durable yet);
        LeaseLost if it is someone else's."""
        if self.holder is None:
            raise self._gone()
        try:
            self._extend()
        except (redis.RedisError, OSError) as exc:
            log.warning("lease %s could not be confirmed: %s", self.key, exc)
            if not self.held:
                raise self._lose(
                    f"lease {self.name}: could not renew it for {self.ttl:g}s ({exc})"
                ) from None
            return False
        return True

    def _extend(self) -> None:
        started = time.monotonic()
        if self._renew(keys=[self.key], args=[self._value, int(self.ttl * 1000)]):
            self._renewed, self._failing = started, False
            return
        other = None
        with contextlib.suppress(redis.RedisError, OSError):
            other = self.current()
        who = other.describe() if other is not None else "nobody (it expired)"
        raise self._lose(f"lease {self.name} was lost: now held by {who}", other)

    def _lose(self, why: str, other: Holder | None = None) -> LeaseLost:
        ours = self.holder
        if ours is not None:
            why = f"{why} (ours since {ours.since.isoformat(timespec='seconds')})"
        self.holder = None
        self._lost = LeaseLost(why, other)
        return self._lost

    def _gone(self) -> LeaseLost:
        if self._lost is not None:
            return LeaseLost(str(self._lost), self._lost.holder)
        return LeaseLost(f"lease {self.name} is not held (never taken, or released)")

    def release(self) -> bool:
        """Give the lease up if it is still ours; False if it was not (or Redis failed)."""
        if self.holder is None:
            return False
        self.holder = None
        try:
            return bool(self._release(keys=[self.key], args=[self._value]))
        except (redis.RedisError, OSError) as exc:
            log.warning("lease %s not released (it expires in %gs): %s", self.key, self.ttl, exc)
            return False

    def close(self) -> None:
        self._client.close()
