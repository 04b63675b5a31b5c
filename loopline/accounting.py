"""Stream accounting: where every record read from ``events`` and ``labels`` ended up.

The streams keep one Redis hash per source partition, holding absolute counts as of
that partition's last durable commit (so a rewrite after a restart is idempotent)::

    <prefix>streams:accounting:<partition>  ->  {counter: count, _lineage, _seq, _resets}

Each write carries the commit it describes: the partition's lineage (the history of
its state, new when the state starts from nothing) and the commit's number in it. A
write older than the stored one (a worker that lost the partition but has not noticed
yet) is refused, so the books never go back. A write from another lineage replaces
the counts and bumps ``_resets``: the state the old counts described is gone (a
broker that lost its data), which :attr:`Accounting.resets` reports.

For events the books balance at every commit::

    events = examples + deadlettered + duplicates + pending + dropped

and for labels ``labels = labels_joined + labels_deadlettered + labels_duplicates +
labels_waiting`` (a label waits briefly when it overtakes its event). Records
published but not yet read are the consumer lag, shown beside the counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import redis

from loopline.redis_client import redis_client
from loopline.settings import Settings

EVENT_OUTCOMES = ("examples", "deadlettered", "duplicates", "pending", "dropped")
LABEL_OUTCOMES = ("labels_joined", "labels_deadlettered", "labels_duplicates", "labels_waiting")
DETAILS = (
    "examples_labelled",
    "examples_defaulted",
    "labels_late",
    "examples_served",
    "examples_recomputed",
    "served_compared",
    "served_skewed",
)
COUNTERS = ("events", *EVENT_OUTCOMES, "labels", *LABEL_OUTCOMES, *DETAILS)
REJECTED = "rejected."


def partition_key(settings: Settings, partition: int) -> str:
    return settings.key("streams", "accounting", str(partition))


class Stamped(NamedTuple):
    """A partition's counts as of one commit of one lineage."""

    lineage: str
    seq: int
    counts: Mapping[str, int]


_WRITE = """
local lineage = redis.call('HGET', KEYS[1], '_lineage')
if lineage == ARGV[1] then
  if tonumber(redis.call('HGET', KEYS[1], '_seq') or '-1') >= tonumber(ARGV[2]) then
    return 0
  end
  redis.call('HSET', KEYS[1], '_seq', ARGV[2], unpack(ARGV, 3))
  return 1
end
local resets = tonumber(redis.call('HGET', KEYS[1], '_resets') or '0')
if lineage then resets = resets + 1 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_lineage', ARGV[1], '_seq', ARGV[2], '_resets', resets, unpack(ARGV, 3))
return 1
"""


def write(client: redis.Redis, settings: Settings, counts: Mapping[int, Stamped]) -> None:
    """Store each partition's absolute counts, unless a later commit's are stored."""
    script = client.register_script(_WRITE)
    with client.pipeline(transaction=False) as pipe:
        for partition, stamped in counts.items():
            fields = [str(x) for kv in stamped.counts.items() for x in kv]
            script(
                keys=[partition_key(settings, partition)],
                args=[stamped.lineage, stamped.seq, *fields],
                client=pipe,
            )
        pipe.execute()


@dataclass
class Accounting:
    """Counts summed over partitions."""

    totals: dict[str, int] = field(default_factory=dict)
    partitions: int = 0
    resets: int = 0  # times a partition's state was found gone (see the module docstring)

    def get(self, name: str) -> int:
        return self.totals.get(name, 0)

    @property
    def events_balance(self) -> int:
        """Events read minus every outcome: zero when the books balance."""
        return self.get("events") - sum(self.get(n) for n in EVENT_OUTCOMES)

    @property
    def labels_balance(self) -> int:
        return self.get("labels") - sum(self.get(n) for n in LABEL_OUTCOMES)

    def problems(self, published_events: int | None = None) -> list[str]:
        """What makes the books untrustworthy, beyond their balance: logs that were
        replaced or lost records before they were read, and more read than published."""
        found = []
        if self.resets:
            found.append(f"the streams' state was lost {self.resets} time(s) (broker data lost?)")
        for topic in ("events", "labels"):
            if n := self.get(f"{topic}_log_resets"):
                found.append(f"{topic}: the log was replaced under the workers {n} time(s)")
            if n := self.get(f"{topic}_lost_to_retention"):
                found.append(f"{topic}: {n} records deleted by retention before they were read")
        if published_events is not None and self.get("events") > published_events:
            found.append(
                f"{self.get('events')} events read but the log holds {published_events}: "
                "it was recreated or the broker lost its data"
            )
        return found

    @property
    def rejected(self) -> dict[str, int]:
        """Deadlettered records by ``topic.reason``."""
        return {
            k.removeprefix(REJECTED): v
            for k, v in sorted(self.totals.items())
            if k.startswith(REJECTED)
        }


def read(settings: Settings) -> Accounting:
    client = redis_client(settings)
    with client:
        keys = sorted(client.scan_iter(match=partition_key(settings, 0)[:-1] + "*", count=1000))
        accounting = Accounting(partitions=len(keys))
        for key in keys:
            values: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
            accounting.resets += int(values.get(b"_resets", 0))
            for name, value in values.items():
                counter = name.decode()
                if not counter.startswith("_"):
                    accounting.totals[counter] = accounting.totals.get(counter, 0) + int(value)
    return accounting
