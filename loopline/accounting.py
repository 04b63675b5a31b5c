"""Stream accounting: where every record read from ``events`` and ``labels`` ended up.

The streams keep one Redis hash per source partition, holding absolute counts as of
that partition's last durable commit (so a rewrite after a restart is idempotent)::

    <prefix>streams:accounting:<partition>  ->  {counter: count}

For events the books balance at every commit::

    events = examples + deadlettered + duplicates + pending + dropped

and for labels ``labels = labels_joined + labels_deadlettered + labels_duplicates +
labels_waiting`` (a label waits briefly when it overtakes its event). Records
published but not yet read are the consumer lag, shown beside the counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import redis

from loopline.redis_client import redis_client
from loopline.settings import Settings

EVENT_OUTCOMES = ("examples", "deadlettered", "duplicates", "pending", "dropped")
LABEL_OUTCOMES = ("labels_joined", "labels_deadlettered", "labels_duplicates", "labels_waiting")
DETAILS = ("examples_labelled", "examples_defaulted", "labels_late")
COUNTERS = ("events", *EVENT_OUTCOMES, "labels", *LABEL_OUTCOMES, *DETAILS)
REJECTED = "rejected."


def partition_key(settings: Settings, partition: int) -> str:
    return settings.key("streams", "accounting", str(partition))


def write(client: redis.Redis, settings: Settings, counts: Mapping[int, Mapping[str, int]]) -> None:
    """Store each partition's absolute counts."""
    with client.pipeline(transaction=False) as pipe:
        for partition, values in counts.items():
            pipe.hset(partition_key(settings, partition), mapping=dict(values))
        pipe.execute()


@dataclass
class Accounting:
    """Counts summed over partitions."""

    totals: dict[str, int] = field(default_factory=dict)
    partitions: int = 0

    def get(self, name: str) -> int:
        return self.totals.get(name, 0)

    @property
    def events_balance(self) -> int:
        """Events read minus every outcome: zero when the books balance."""
        return self.get("events") - sum(self.get(n) for n in EVENT_OUTCOMES)

    @property
    def labels_balance(self) -> int:
        return self.get("labels") - sum(self.get(n) for n in LABEL_OUTCOMES)

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
            for name, value in values.items():
                counter = name.decode()
                accounting.totals[counter] = accounting.totals.get(counter, 0) + int(value)
    return accounting
