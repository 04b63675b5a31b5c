"""The lease's own logic, over an in-memory stand-in for Redis and a hand-driven clock
(the integration tests run it against real Redis and real trainer processes)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis

import loopline.lease as lease_module
from loopline.errors import LeaseHeld, LeaseLost
from loopline.lease import Holder, Lease
from loopline.settings import Settings

TTL = 9.0


class FakeRedis:
    """GET, SET NX and the two compare-and-set scripts; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise redis.ConnectionError("connection refused")

    def get(self, key: str) -> bytes | None:
        self._check()
        return self.values.get(key)

    def set(self, key: str, value: bytes, nx: bool, px: int) -> bool:
        self._check()
        if nx and key in self.values:
            return False
        self.values[key] = value
        return True

    def register_script(self, source: str) -> Any:
        def run(keys: list[str], args: list[Any]) -> int:
            self._check()
            if self.values.get(keys[0]) != args[0]:
                return 0
            if "del" in source:
                del self.values[keys[0]]
            return 1

        return run

    def close(self) -> None:
        pass


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    now = SimpleNamespace(t=1000.0)
    fake = SimpleNamespace(monotonic=lambda: now.t, sleep=lambda s: setattr(now, "t", now.t + s))
    monkeypatch.setattr(lease_module, "time", fake)
    return now


def test_renewal_failures_are_tolerated_until_the_lease_may_have_expired(
    unit_settings: Settings, clock: SimpleNamespace
) -> None:
    client = FakeRedis()
    lease = Lease(unit_settings, "role", TTL, client=client)  # type: ignore[arg-type]
    lease.acquire()
    clock.t += TTL / 3
    client.down = True
    lease.keep()  # failed, but the lease is ours for 2/3 of a TTL more
    assert lease.held
    assert lease.confirm() is False  # nothing durable while Redis cannot vouch
    clock.t += TTL / 3
    lease.keep()
    clock.t += TTL / 3
    with pytest.raises(LeaseLost, match="could not renew"):
        lease.keep()
    client.down = False
    with pytest.raises(LeaseLost, match="could not renew"):
        lease.keep()  # once lost, lost: the process must start over


def test_a_renewal_in_time_keeps_the_lease(unit_settings: Settings, clock: SimpleNamespace) -> None:
    client = FakeRedis()
    lease = Lease(unit_settings, "role", TTL, client=client)  # type: ignore[arg-type]
    lease.acquire()
    for _ in range(10):
        clock.t += TTL / 2
        lease.keep()
    assert lease.held and lease.confirm()
    assert lease.release() and client.values == {}


def test_waiting_for_a_lease_that_lapses_takes_it(
    unit_settings: Settings, clock: SimpleNamespace
) -> None:
    client = FakeRedis()
    dead = Holder("t0", "elsewhere", 42, lease_module.utcnow())
    client.values["unit.lease:role"] = dead.to_json()
    lease = Lease(unit_settings, "role", TTL, client=client)  # type: ignore[arg-type]
    with pytest.raises(LeaseHeld, match="held by elsewhere pid 42 since") as refused:
        lease.acquire(wait=1.0)
    assert refused.value.holder == dead
    calls = 0

    def lapse(seconds: float) -> None:
        nonlocal calls
        calls += 1
        clock.t += seconds
        if calls == 3:
            del client.values["unit.lease:role"]

    lease_module.time.sleep = lapse  # type: ignore[attr-defined]
    mine = lease.acquire(wait=TTL)
    assert Holder.from_json(client.values["unit.lease:role"]) == mine
