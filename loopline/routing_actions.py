"""Operator actions on the routing state: roll back, pin, pause/resume/abort a ramp, kill switch.

The CLI (``ops/serving_commands.py``) calls these directly on Redis, so they work while
the pusher or the broker is down; the pusher calls the same functions for the
serving Commands it reads on ``control`` (:func:`apply`), so a script or monitor can
act through the topic too. Each is one transaction of :meth:`RoutingStore.update`.

A Command's change and the record that it was applied (its id in ``control_applied``)
are that one transaction: a Redis failure midway leaves neither, so the Command is
applied when it is read again, and one applied is never applied twice
(:class:`~loopline.routing.AlreadyApplied`) — a repeated ``rollback`` would otherwise
roll back one step further.

A rollback or a pin holds: automatic pushes stop until :func:`unpin`, so the next
checkpoint of a bad lineage cannot undo it.
"""

from __future__ import annotations

from loopline.checkpoints import CheckpointStore, manifest_sha256
from loopline.contracts import Command, CommandKind
from loopline.errors import CheckpointError, LooplineError
from loopline.routing import RampState, RampStatus, RoutingStore, RoutingTable, serve_only
from loopline.settings import Settings
from loopline.signing import public_key, verdict_refusal

_RAMP_MOVES = {
    CommandKind.PAUSE_RAMP: RampStatus.PAUSED,
    CommandKind.RESUME_RAMP: RampStatus.RAMPING,
    CommandKind.ABORT_RAMP: RampStatus.ABORTED,
}


def verify_servable(settings: Settings, store: RoutingStore, checkpoint_id: str) -> None:
    """Raise :class:`CheckpointError` for a checkpoint serving would refuse."""
    verdict = store.verdict(checkpoint_id)
    if verdict is None:  # said first: what an operator most likely mistyped
        refusal = verdict_refusal(None, checkpoint_id, "", public_key(settings, "pusher"))
        raise CheckpointError(f"{refusal}; serving would refuse it")
    manifest = CheckpointStore.of(settings).verified(checkpoint_id)
    refusal = verdict_refusal(
        verdict,
        checkpoint_id,
        manifest_sha256(manifest),
        public_key(settings, "pusher"),
    )
    if refusal is not None:
        raise CheckpointError(f"{refusal}; serving would refuse it")
    schema = settings.load_spec().schema_hash
    if manifest.schema_hash != schema:
        msg = f"checkpoint {checkpoint_id}: feature schema {manifest.schema_hash} is not serving's {schema}"
        raise CheckpointError(msg)


def _serve_and_pin(
    store: RoutingStore,
    checkpoint_id: str,
    status: RampStatus,
    why: str,
    by: str,
    command_id: str | None,
    *,
    retire_champion: bool = False,
) -> RoutingTable:
    def change(
        table: RoutingTable, ramp: RampState | None
    ) -> tuple[RoutingTable, RampState | None]:
        ended = ramp.moved(status, why) if ramp is not None and ramp.active else None
        return serve_only(table, checkpoint_id, why), ended

    return store.update(
        change,
        why,
        by,
        set_pin=checkpoint_id,
        command_id=command_id,
        retire_champion=retire_champion,
    )


def rollback_target(store: RoutingStore) -> str:
    """The baseline of a ramp in progress, else the latest former champion."""
    ramp, champion = store.ramp(), store.table().champion
    if ramp is not None and ramp.active:
        return ramp.baseline
    rolled_back = store.rolled_back()
    for former in store.former_champions():
        if former != champion and former not in rolled_back:
            return former
    raise LooplineError("no earlier champion to roll back to; name a checkpoint")


def rollback(
    settings: Settings,
    store: RoutingStore,
    to: str | None,
    reason: str,
    by: str,
    command_id: str | None = None,
) -> RoutingTable:
    target = to or rollback_target(store)
    verify_servable(settings, store, target)
    why = f"rollback to {target}: {reason}"
    # The champion replaced is retired, so a second rollback goes further back.
    return _serve_and_pin(
        store, target, RampStatus.ROLLED_BACK, why, by, command_id, retire_champion=True
    )


def pin(
    settings: Settings,
    store: RoutingStore,
    checkpoint_id: str,
    reason: str,
    by: str,
    command_id: str | None = None,
) -> RoutingTable:
    verify_servable(settings, store, checkpoint_id)
    why = f"pin {checkpoint_id}: {reason}"
    return _serve_and_pin(store, checkpoint_id, RampStatus.ABORTED, why, by, command_id)


def unpin(store: RoutingStore) -> None:
    store.pin(None)


def move_ramp(
    store: RoutingStore, status: RampStatus, reason: str, by: str, command_id: str | None = None
) -> RampState:
    """Pause, resume or abort the ramp in progress (an abort serves the baseline to all)."""

    def change(
        table: RoutingTable, ramp: RampState | None
    ) -> tuple[RoutingTable | None, RampState]:
        if ramp is None or not ramp.active:
            raise LooplineError("no ramp in progress")
        moved = ramp.moved(status, reason)
        if status is RampStatus.ABORTED:
            why = f"ramp of {ramp.candidate} aborted: {reason}"
            return serve_only(table, ramp.baseline, why), moved
        return None, moved

    store.update(change, f"ramp {status}: {reason}", by, command_id=command_id)
    ramp = store.ramp()
    assert ramp is not None
    return ramp


def apply(settings: Settings, store: RoutingStore, command: Command) -> str | None:
    """Carry out a serving Command and record it applied, in one transaction.

    None for kinds serving does not own; :class:`~loopline.routing.AlreadyApplied` if
    it was applied before.
    """
    kind, by, reason, cid = (
        command.kind,
        f"control:{command.issued_by}",
        command.reason or str(command.kind),
        command.command_id,
    )
    checkpoint = command.args.get("checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise LooplineError(f"command {command.command_id}: args.checkpoint must be a string")
    if kind is CommandKind.ROLLBACK:
        table = rollback(settings, store, checkpoint, reason, by, cid)
        return f"rolled back to {table.champion}"
    if kind is CommandKind.PIN:
        if checkpoint is None:
            raise LooplineError(f"command {command.command_id}: pin needs args.checkpoint")
        return f"pinned {pin(settings, store, checkpoint, reason, by, cid).champion}"
    if kind in _RAMP_MOVES:
        ramp = move_ramp(store, _RAMP_MOVES[kind], reason, by, cid)
        return f"ramp of {ramp.candidate} {ramp.status}"
    if kind in (CommandKind.KILL_SWITCH_ON, CommandKind.KILL_SWITCH_OFF):
        on = kind is CommandKind.KILL_SWITCH_ON
        store.set_kill_switch(on, reason, by, command_id=cid)
        return f"kill switch {'on' if on else 'off'}"
    return None
