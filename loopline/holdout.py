"""The holdout slice: a deterministic share of events, by event id, that no model learns.

The trainer skips these examples and the pusher qualifies checkpoints on them, so both
must agree on the same function.

>>> in_holdout("e-1", 0.0), in_holdout("e-1", 1.0)
(False, True)
"""

from __future__ import annotations

import hashlib

_SCALE = 2**64
#: Holdout examples the pusher keeps in memory, newest first out of its tail.
HOLDOUT_CAPACITY = 5000
#: Records of each partition of ``examples`` (and ``predictions``, ``labels``) the
#: pusher reads back on start to rebuild its holdout and online metrics.
TAIL_RECORDS = 50_000


def holdout_position(event_id: str) -> float:
    """A stable number in [0, 1) derived from the event id."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def in_holdout(event_id: str, fraction: float) -> bool:
    return holdout_position(event_id) < fraction
