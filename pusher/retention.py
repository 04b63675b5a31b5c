"""Verdicts follow the checkpoint store: a verdict outlives its checkpoint by one sweep.

The trainer prunes checkpoints (the newest K of a model, plus every served one); the
pusher's verdicts on the pruned ones would otherwise stay in Redis for good. Every
``every_seconds`` the pusher deletes the verdicts of its model whose checkpoint is no
longer in the store. A served checkpoint keeps its verdict whatever the store says:
serving and rollbacks check it.
"""

from __future__ import annotations

import logging
import time

from loopline.checkpoints import CheckpointStore
from loopline.routing import RoutingStore

log = logging.getLogger(__name__)


def stale_verdicts(with_verdict: set[str], in_store: set[str], served: set[str]) -> set[str]:
    """The checkpoints whose verdict may go: gone from the store, and not served.

    >>> sorted(stale_verdicts({"a", "b", "c"}, in_store={"a"}, served={"c"}))
    ['b']
    """
    return with_verdict - in_store - served


class VerdictSweeper:
    def __init__(
        self,
        routing: RoutingStore,
        store: CheckpointStore,
        model_name: str,
        every_seconds: float = 600.0,
    ) -> None:
        self._routing = routing
        self._store = store
        self._model = model_name
        self._every = every_seconds
        self._next = 0.0

    def maybe_sweep(self) -> set[str] | None:
        """Sweep if one is due; what was deleted, or None if none was due."""
        if time.monotonic() < self._next:
            return None
        deleted = self.sweep()
        self._next = time.monotonic() + self._every
        return deleted

    def sweep(self) -> set[str]:
        """Delete this model's verdicts on checkpoints the store no longer holds."""
        with_verdict = self._routing.verdict_ids()
        in_store = {m.checkpoint_id for m in self._store.manifests()}
        gone = stale_verdicts(with_verdict, in_store, self._routing.served())
        # Several models may share a deployment: only this model's verdicts are ours.
        # One that cannot be read says no model: it is never read as a verdict either.
        ours = set()
        for cid in gone:
            verdict = self._routing.verdict(cid)
            manifest = verdict.get("manifest") if verdict is not None else None
            model = manifest.get("model_name") if isinstance(manifest, dict) else None
            if model in (None, self._model):
                ours.add(cid)
        self._routing.forget_verdicts(ours)
        if ours:
            log.info("deleted %d verdicts on checkpoints no longer stored", len(ours))
        return ours
