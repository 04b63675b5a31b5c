from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loopline.contracts import CheckpointManifest
from loopline.routing import ROLLBACK_DEPTH, RampStatus, RoutingStore, serve_only
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from pusher.policy import push
from tests.unit.pusher.pusher_support import manifest

SPEC = load_spec(DEFAULT_SPEC)
T0 = datetime.now(UTC) - timedelta(hours=1)


def test_the_push_policy(settings: Settings) -> None:
    known: dict[str, CheckpointManifest] = {}

    def checkpoint(cid: str, lineage: str, minutes: int) -> CheckpointManifest:
        known[cid] = manifest(
            SPEC, cid, lineage=lineage, created_at=T0 + timedelta(minutes=minutes)
        )
        return known[cid]

    store = RoutingStore(settings)
    try:

        def outcome(m: CheckpointManifest) -> str:
            return push(SPEC, store, m, known.get)

        assert outcome(checkpoint("a1", "a", 1)) == "champion: nothing was serving"
        assert outcome(checkpoint("a2", "a", 2)).startswith("champion: fresher than a1")
        assert outcome(checkpoint("a0", "a", 0)).startswith("held: not fresher than the champion")
        assert outcome(checkpoint("old", "o", 0)).startswith("held: older than the champion")
        assert outcome(checkpoint("b1", "b", 3)) == "ramp: 1% against a2"
        table = store.table()
        assert [(r.checkpoint_id, r.percent) for r in table.routes] == [("b1", 1.0), ("a2", 99.0)]
        assert outcome(checkpoint("c1", "c", 4)) == "held: a ramp of b1 is in progress"
        assert (
            outcome(checkpoint("b2", "b", 5)) == "replaced the ramp's candidate b1 (same lineage)"
        )
        assert outcome(checkpoint("a3", "a", 6)) == "replaced the ramp's baseline a2 (same lineage)"
        ramp = store.ramp()
        assert ramp is not None and (ramp.candidate, ramp.baseline) == ("b2", "a3")
        assert store.table().checkpoint_ids == ("b2", "a3")
        # Serving now, or former champions to roll back to; b1 was neither.
        assert store.served() == {"a1", "a2", "b2", "a3"}
        assert store.former_champions() == ["a2", "a1"]

        store.update(lambda t, r: (None, r.moved(RampStatus.ROLLED_BACK, "test")), "test")  # type: ignore[union-attr]
        assert outcome(checkpoint("b3", "b", 7)).startswith("held: lineage b was rolled back")
        store.pin("a3")
        assert outcome(checkpoint("a4", "a", 8)) == "held: operators pinned a3"
    finally:
        store.close()


def test_served_keeps_what_serves_and_the_rollback_targets(settings: Settings) -> None:
    store = RoutingStore(settings)
    try:
        for i in range(ROLLBACK_DEPTH + 3):
            store.update(lambda t, _, c=f"ck-{i}": (serve_only(t, c, "test"), None), "test")  # type: ignore[misc]
        last = ROLLBACK_DEPTH + 2
        assert store.served() == {f"ck-{i}" for i in range(2, last + 1)}
        assert store.former_champions() == [f"ck-{i}" for i in range(last - 1, 1, -1)]
    finally:
        store.close()
