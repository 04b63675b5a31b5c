from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from loopline.contracts import CommandKind, utcnow
from loopline.control import make_command, send
from loopline.routing import RoutingStore, serve_only
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from tests.integration.serving.serving_support import (
    pusher,
    record_qualified,
    store_of,
    wait_for,
)
from tests.unit.pusher.pusher_support import ConstantModel, save


def test_the_pusher_applies_serving_commands_from_control_once(settings: Settings) -> None:
    spec = load_spec(DEFAULT_SPEC)
    store = store_of(settings)
    routing = RoutingStore(settings)
    for cid in ("ck-1", "ck-2", "ck-3"):
        save(store, spec, cid, ConstantModel(0.1))
        record_qualified(settings, routing, cid)
        routing.update(lambda t, _, c=cid: (serve_only(t, c, "test"), None), "test")  # type: ignore[misc]
    # Sent before the pusher ever followed control: history, never replayed.
    send(settings, make_command(CommandKind.KILL_SWITCH_ON, reason="last week"))
    send(settings, make_command(CommandKind.KILL_SWITCH_ON, "another_model", reason="not ours"))
    try:
        with pusher(settings, spec) as worker:
            wait_for(worker.control.ready.is_set, "the pusher to follow control")
            kill = make_command(CommandKind.KILL_SWITCH_ON, spec.name, reason="monitor saw bots")
            send(settings, kill)
            wait_for(lambda: routing.kill_switch().on, "the kill switch")
            send(settings, make_command(CommandKind.ROLLBACK, reason="bad day"))
            wait_for(lambda: routing.table().champion == "ck-2", "the rollback")
            send(settings, kill)  # delivered again: applied once only
            send(settings, make_command(CommandKind.KILL_SWITCH_OFF, spec.name))
            wait_for(lambda: not routing.kill_switch().on, "the kill switch off")
        assert worker.control.applied == [
            "kill switch on",
            "rolled back to ck-2",
            "kill switch off",
        ]
        assert routing.pinned() == "ck-2"
        assert routing.kill_switch().by.startswith("control:")
        assert "ck-3" in routing.rolled_back()

        # Sent while the pusher is down, by an issuer whose clock is hours behind: the
        # committed position, not the clock, says it is new.
        late = replace(
            make_command(CommandKind.ROLLBACK, spec.name, reason="while down"),
            issued_at=utcnow() - timedelta(hours=3),
        )
        send(settings, late)
        with pusher(settings, spec) as worker:
            wait_for(lambda: routing.table().champion == "ck-1", "the rollback sent while down")
            send(settings, late)  # a repeated rollback would go one step further
            marker = make_command(CommandKind.KILL_SWITCH_ON, spec.name, reason="marker")
            send(settings, marker)
            wait_for(lambda: routing.kill_switch().on, "the marker after the repeat")
        assert worker.control.applied == ["rolled back to ck-1", "kill switch on"]
        assert routing.table().champion == "ck-1"
    finally:
        routing.close()
