"""The push policy: what a qualified checkpoint does to the routing table.

- Operators pinned a checkpoint: nothing moves automatically (``loopline unpin``).
- Nothing serves yet: the checkpoint becomes the champion.
- Same lineage as the champion (lineage, spec version and schema hash all equal):
  it replaces the champion at once, the freshness path. Same for the candidate or
  the baseline of a ramp in progress: the fresher one takes its place at its share.
- Anything else is a new model: it ramps against the champion through the spec's
  stages (:mod:`pusher.ramp`). One ramp at a time; a new model that arrives during
  one waits for a later checkpoint of its lineage. A lineage whose last ramp rolled
  back does not ramp again by itself.
- A checkpoint older than the one it would replace is never pushed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from loopline.contracts import CheckpointManifest
from loopline.routing import (
    RampState,
    RampStatus,
    Route,
    RoutingStore,
    RoutingTable,
    serve_only,
    split,
)
from loopline.spec import Spec
from pusher.ramp import start

Manifests = Callable[[str], CheckpointManifest | None]


def same_lineage(a: CheckpointManifest, b: CheckpointManifest) -> bool:
    return (a.lineage, a.spec_version, a.schema_hash) == (b.lineage, b.spec_version, b.schema_hash)


def _older(new: CheckpointManifest, held: CheckpointManifest) -> bool:
    return (new.created_at, new.examples_seen) <= (held.created_at, held.examples_seen)


def _swap(table: RoutingTable, old: str, new: str, reason: str) -> RoutingTable:
    routes = tuple(
        Route(new if r.checkpoint_id == old else r.checkpoint_id, r.percent) for r in table.routes
    )
    champion = new if table.champion == old else table.champion
    return replace(table, routes=routes, champion=champion, reason=reason)


def push(spec: Spec, store: RoutingStore, new: CheckpointManifest, manifests: Manifests) -> str:
    """Apply the policy to a qualified checkpoint; return what happened (for the verdict)."""
    pinned = store.pinned()
    if pinned is not None:
        return f"held: operators pinned {pinned}"
    outcome = "unchanged"
    cid = new.checkpoint_id

    def change(
        table: RoutingTable, ramp: RampState | None
    ) -> tuple[RoutingTable | None, RampState | None] | None:
        nonlocal outcome
        if ramp is not None and ramp.active:
            for role, held_id in (("candidate", ramp.candidate), ("baseline", ramp.baseline)):
                held = manifests(held_id)
                if held is not None and same_lineage(new, held):
                    if _older(new, held):
                        outcome = f"held: not fresher than the ramp's {role} {held_id}"
                        return None
                    outcome = f"replaced the ramp's {role} {held_id} (same lineage)"
                    table = _swap(table, held_id, cid, f"fresher {role} {cid}")
                    if role == "candidate":
                        return table, replace(ramp, candidate=cid)
                    return table, replace(ramp, baseline=cid)
            outcome = f"held: a ramp of {ramp.candidate} is in progress"
            return None
        if table.champion is None:
            outcome = "champion: nothing was serving"
            return serve_only(table, cid, f"first champion {cid}"), None
        champion = manifests(table.champion)
        if champion is None:  # never take over from a champion we cannot compare with
            outcome = f"held: the champion {table.champion}'s manifest is unreadable"
            return None
        if same_lineage(new, champion):
            if _older(new, champion):
                outcome = f"held: not fresher than the champion {champion.checkpoint_id}"
                return None
            outcome = f"champion: fresher than {champion.checkpoint_id} of the same lineage"
            return serve_only(table, cid, f"fresher champion {cid}"), None
        if new.created_at <= champion.created_at:
            outcome = f"held: older than the champion {champion.checkpoint_id}"
            return None
        last = manifests(ramp.candidate) if ramp is not None else None
        if (
            ramp is not None
            and ramp.status is RampStatus.ROLLED_BACK
            and last is not None
            and same_lineage(new, last)
        ):
            outcome = (
                f"held: lineage {new.lineage} was rolled back ({ramp.reason}); pin to serve it"
            )
            return None
        fresh = start(spec, cid, champion.checkpoint_id)
        outcome = f"ramp: {fresh.percent:g}% against {champion.checkpoint_id}"
        return split(table, cid, champion.checkpoint_id, fresh.percent, f"ramp {cid}"), fresh

    store.update(change, f"push {cid}", unless_pinned=True)
    if outcome == "unchanged" and (pinned := store.pinned()) is not None:
        outcome = f"held: operators pinned {pinned}"
    return outcome
