"""Verdicts follow the checkpoint store: the pusher deletes those of pruned checkpoints."""

from __future__ import annotations

from dataclasses import replace

from loopline.routing import RoutingStore, serve_only
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from pusher.retention import VerdictSweeper
from tests.integration.serving.serving_support import pusher, store_of, wait_for
from tests.unit.pusher.pusher_support import ConstantModel, manifest, save


def _verdict(routing: RoutingStore, cid: str, model: str) -> None:
    routing.record_verdict(
        cid, {"checkpoint_id": cid, "verdict": "qualified", "manifest": {"model_name": model}}
    )


def test_verdicts_of_pruned_checkpoints_go_served_and_foreign_ones_stay(
    settings: Settings,
) -> None:
    spec = load_spec(DEFAULT_SPEC)
    store, routing = store_of(settings), RoutingStore(settings)
    for cid in ("ck-kept", "ck-pruned", "ck-served"):
        save(store, spec, cid, ConstantModel())
        _verdict(routing, cid, spec.name)
    other = replace(manifest(spec, "other-1"), model_name="another_model")
    store.save(other, ConstantModel())
    _verdict(routing, "other-1", "another_model")
    _verdict(routing, "other-pruned", "another_model")  # its pusher's to delete
    routing.client.set(settings.key("verdict", "garbage"), b"\xff not json")
    routing.update(lambda t, _: (serve_only(t, "ck-served", "test"), None), "test")
    store.delete("ck-pruned")
    store.delete("ck-served")  # served: serving and rollbacks still check its verdict

    deleted = VerdictSweeper(routing, store, spec.name).sweep()

    assert deleted == {"ck-pruned", "garbage"}
    assert routing.verdict_ids() == {"ck-kept", "ck-served", "other-1", "other-pruned"}


def test_a_sweep_runs_only_when_due(settings: Settings) -> None:
    spec = load_spec(DEFAULT_SPEC)
    store, routing = store_of(settings), RoutingStore(settings)
    sweeper = VerdictSweeper(routing, store, spec.name, every_seconds=3600)
    _verdict(routing, "ck-1", spec.name)
    assert sweeper.maybe_sweep() == {"ck-1"}
    _verdict(routing, "ck-2", spec.name)
    assert sweeper.maybe_sweep() is None
    assert routing.verdict_ids() == {"ck-2"}


def test_the_running_pusher_deletes_verdicts_of_pruned_checkpoints(settings: Settings) -> None:
    spec = load_spec(DEFAULT_SPEC)
    store, routing = store_of(settings), RoutingStore(settings)
    save(store, spec, "ck-kept", ConstantModel())
    _verdict(routing, "ck-kept", spec.name)
    _verdict(routing, "ck-pruned", spec.name)
    with pusher(settings, spec):
        wait_for(lambda: routing.verdict_ids() == {"ck-kept"}, "the pruned checkpoint's verdict")
