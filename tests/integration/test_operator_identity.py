"""Operators' identities against the real broker: readers holding operator keys apply a
Command only when its signature proves who issued it; history shows who that was."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from loopline.cli import app
from loopline.contracts import Command, CommandKind
from loopline.control import issue, make_command, read_log, send
from loopline.routing import RoutingStore, serve_only
from loopline.settings import Settings
from loopline.signing.commands import Operator, sign_command, write_operator_pair
from loopline.spec import DEFAULT_SPEC, Spec, load_spec
from ops import history
from tests.integration.serving.serving_support import (
    pusher,
    record_qualified,
    wait_for,
)
from tests.integration.serving.serving_support import (
    store_of as serving_store,
)
from tests.integration.trainer.trainer_support import publish, step_until
from tests.unit.pusher.pusher_support import ConstantModel, save
from tests.unit.trainer.trainer_data import make_examples
from trainer.core import Trainer


@pytest.fixture
def keyed(settings: Settings, tmp_path: Path) -> tuple[Settings, Settings]:
    """A reader's settings, holding operator alice's public key, and alice's own."""
    alice = write_operator_pair(tmp_path / "keys", "alice")
    reader = settings.replace(operator_keys=str(tmp_path / "keys" / "operators"))
    return reader, reader.replace(operator_key=str(alice.private))


def forgeries(scope: str) -> list[Command]:
    """An unsigned pause as alice, one signed by a stranger's key as alice, and one that
    carries the signature of another Command alice did sign."""
    unsigned = make_command(CommandKind.PAUSE, scope, reason="unsigned", issued_by="alice")
    stranger = Operator("alice", Ed25519PrivateKey.generate())
    foreign = sign_command(make_command(CommandKind.PAUSE, scope, reason="stranger"), stranger)
    return [unsigned, foreign]


def replayed(genuine: Command, kind: CommandKind, scope: str) -> Command:
    """Another Command wearing ``genuine``'s issuer and signature."""
    other = make_command(kind, scope, reason="replayed", issued_by=genuine.issued_by)
    return replace(other, signature=genuine.signature)


def _refused(trainer: Trainer, model: str) -> float:
    value = trainer.exporter.registry.get_sample_value(
        "loopline_trainer_control_refused_total", {"model": model}
    )
    return value or 0.0


def test_the_trainer_ignores_forged_pauses_and_applies_a_signed_one(
    keyed: tuple[Settings, Settings],
) -> None:
    reader, alice = keyed
    spec: Spec = load_spec(DEFAULT_SPEC)
    # A resume alice really signed (for another scope), whose signature is then replayed.
    genuine = send(alice, issue(alice, CommandKind.RESUME, "another_model", reason="r"))
    trainer = Trainer(reader, spec, batch_size=100)
    # Counted from here: once Feast is imported, counters of one name share their value
    # across a process (prometheus_client's multiprocess mode).
    before = _refused(trainer, spec.name)
    trainer.start()
    try:
        publish(reader, make_examples(spec, 200))
        step_until(trainer, lambda: sum(trainer.position.values()) == 200, 60, "first 200")
        forged = [*forgeries(spec.name), replayed(genuine, CommandKind.PAUSE, spec.name)]
        for command in forged:
            send(reader, command)
        step_until(
            trainer, lambda: _refused(trainer, spec.name) - before == 3, 30, "three refusals"
        )
        assert not trainer.paused
        refused = dict(trainer._refused)
        assert "not signed" in refused[forged[0].command_id]
        assert "does not verify with alice's key" in refused[forged[1].command_id]
        assert "does not verify with alice's key" in refused[forged[2].command_id]
        publish(reader, make_examples(spec, 200, seed=1, first=200))
        step_until(trainer, lambda: sum(trainer.position.values()) == 400, 60, "still learning")

        signed = send(alice, issue(alice, CommandKind.PAUSE, spec.name, reason="maintenance"))
        assert signed.issued_by == "alice"
        step_until(trainer, lambda: trainer.paused, 30, "the signed pause")
        assert signed.command_id in trainer._applied
    finally:
        trainer.close()

    # Rebuilt from the log on a start: the signed pause holds, the forgeries do not count.
    again = Trainer(reader, spec, batch_size=100)
    before = _refused(again, spec.name)
    again.start()
    try:
        assert again.paused
        assert _refused(again, spec.name) - before == 3
    finally:
        again.close()

    control = read_log(reader)
    assert [c.command_id for c in control.commands] == [genuine.command_id, signed.command_id]
    assert {r.command.command_id for r in control.refused} == {c.command_id for c in forged}

    entries = {e.why: e for e in history.collect(reader).entries if e.kind == "control"}
    assert entries["maintenance"].who == "alice"
    assert entries["unsigned"].who == "alice (unverified: not signed)"
    assert entries["unsigned"].what.endswith("[refused: not applied]")
    assert "unverified: the signature does not verify" in entries["stranger"].who
    assert entries["maintenance"].as_dict()["verified"] is True

    env = reader.process_env({"COLUMNS": "250"})
    status = CliRunner().invoke(app, ["status", "--json"], env=env)
    assert status.exit_code == 0, status.output
    training = orjson.loads(status.stdout)["training"]
    assert (training["paused"], training["paused_by"]) == (True, "alice")
    assert training["control_refused"] == 3
    shown = CliRunner().invoke(app, ["history"], env=env)
    assert "alice (unverified: not signed)" in shown.stdout, shown.output


def test_the_pusher_ignores_a_forged_kill_switch_and_applies_a_signed_one(
    keyed: tuple[Settings, Settings],
) -> None:
    reader, alice = keyed
    spec = load_spec(DEFAULT_SPEC)
    store, routing = serving_store(reader), RoutingStore(reader)
    try:
        save(store, spec, "ck-1", ConstantModel(0.1))
        record_qualified(reader, routing, "ck-1")
        routing.update(lambda t, _: (serve_only(t, "ck-1", "test"), None), "test")
        genuine = issue(alice, CommandKind.KILL_SWITCH_OFF, "another_model")
        with pusher(reader, spec) as worker:
            wait_for(worker.control.ready.is_set, "the pusher to follow control")
            kinds = (CommandKind.KILL_SWITCH_ON, CommandKind.ROLLBACK)
            forged = [
                make_command(CommandKind.KILL_SWITCH_ON, spec.name, issued_by="alice"),
                sign_command(
                    make_command(CommandKind.ROLLBACK, spec.name),
                    Operator("alice", Ed25519PrivateKey.generate()),
                ),
                *(replayed(genuine, kind, spec.name) for kind in kinds),
            ]
            refused = worker.metrics.refused_commands._value
            before = refused.get()  # shared across the process, as in the trainer's test
            for command in forged:
                send(reader, command)
            wait_for(lambda: refused.get() - before == len(forged), "the forgeries refused")
            assert not routing.kill_switch().on
            assert routing.table().champion == "ck-1"
            send(alice, issue(alice, CommandKind.KILL_SWITCH_ON, spec.name, reason="bots"))
            wait_for(lambda: routing.kill_switch().on, "the signed kill switch")
        assert worker.control.applied == ["kill switch on"]
        assert routing.kill_switch().by == "control:alice"
    finally:
        routing.close()
