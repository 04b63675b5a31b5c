"""Operators' signatures on Commands: the canonical form, a tamper set, key settings, and
what readers and issuers refuse outside development mode."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loopline.contracts import MAX_RECORD_BYTES, Command, CommandKind
from loopline.control import admit, issue, make_command
from loopline.errors import ConfigError
from loopline.settings import Settings
from loopline.signing import require_safe
from loopline.signing.commands import (
    Operator,
    OperatorKeys,
    operator,
    operator_keys,
    payload,
    sign_command,
    write_operator_pair,
)
from loopline.signing.guard import refusals
from loopline.signing.keys import encode, public_bytes, sign
from loopline.signing.verdicts import DOMAIN as VERDICT_DOMAIN
from tests.start_up import run_worker
from tests.unit.signing_support import production

ALICE = Operator("alice", Ed25519PrivateKey.generate())
BOB = Operator("bob", Ed25519PrivateKey.generate())
MALLORY = Ed25519PrivateKey.generate()
KEYS = OperatorKeys({op.name: op.key.public_key() for op in (ALICE, BOB)})


def pause(**changes: object) -> Command:
    command = make_command(
        CommandKind.PAUSE,
        "shop",
        reason="bots",
        args={"b": [1, 2.5, "x"], "a": {"z": None, "y": True}},
        evidence={"breaches": [{"check": "volume", "value": 9.5}]},
    )
    return replace(command, **changes)  # type: ignore[arg-type]


def through_the_wire(command: Command) -> Command:
    return Command.from_json(command.to_json())


def test_a_signed_command_verifies_after_the_wire_and_names_its_key() -> None:
    signed = through_the_wire(sign_command(pause(issued_by="someone@host"), ALICE))
    assert signed.issued_by == "alice"
    assert KEYS.unverified(signed) is None
    assert KEYS.refusal(signed) is None
    raw = base64.b64decode(signed.signature, validate=True)
    assert len(raw) == 64
    assert len(signed.to_json()) < MAX_RECORD_BYTES // 16


def test_the_canonical_form_is_every_field_but_the_signature_in_sorted_json() -> None:
    signed = sign_command(pause(), ALICE)
    document = orjson.loads(payload(signed))
    assert "signature" not in document
    assert set(document) == {
        "command_id",
        "kind",
        "scope",
        "issued_at",
        "issued_by",
        "reason",
        "args",
        "evidence",
        "schema_version",
    }
    assert document["issued_by"] == "alice"
    assert payload(signed) == orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    # The same content in another key order is the same canonical form.
    shuffled = orjson.loads(signed.to_json())
    reordered = orjson.dumps(dict(reversed(list(shuffled.items()))))
    assert payload(Command.from_json(reordered)) == payload(signed)
    # Unsigned and signed commands with equal content share it.
    assert payload(replace(signed, signature="")) == payload(signed)


def _flip(signature: str, at: int) -> str:
    raw = bytearray(base64.b64decode(signature))
    raw[at] ^= 0x01
    return encode(bytes(raw))


SIGNED = sign_command(pause(), ALICE)
OTHER = sign_command(pause(command_id="0123456789abcdef", reason="another"), ALICE)

TAMPERED: dict[str, Callable[[Command], Command]] = {
    "flipped first signature byte": lambda c: replace(c, signature=_flip(c.signature, 0)),
    "flipped last signature byte": lambda c: replace(c, signature=_flip(c.signature, 63)),
    "truncated signature": lambda c: replace(c, signature=c.signature[:-4]),
    "signature not base64": lambda c: replace(c, signature="not base64!"),
    "stripped signature": lambda c: replace(c, signature=""),
    "changed kind": lambda c: replace(c, kind=CommandKind.RESUME),
    "changed scope": lambda c: replace(c, scope="*"),
    "changed reason": lambda c: replace(c, reason="nothing to see"),
    "changed args": lambda c: replace(c, args={**c.args, "b": [1, 2.5, "y"]}),
    "added arg": lambda c: replace(c, args={**c.args, "start": "2026-01-01T00:00:00+00:00"}),
    "changed evidence": lambda c: replace(c, evidence={}),
    "changed issued_at": lambda c: replace(c, issued_at=c.issued_at + timedelta(seconds=1)),
    "changed command_id": lambda c: replace(c, command_id="ffffffffffffffff"),
    "issued_by another known operator": lambda c: replace(c, issued_by="bob"),
    "issued_by an unknown operator": lambda c: replace(c, issued_by="mallory"),
    "signed by an unknown key under a known name": lambda c: sign_command(
        replace(c, signature=""), Operator("alice", MALLORY)
    ),
    "signed by an unknown key under its own name": lambda c: sign_command(
        replace(c, signature=""), Operator("mallory", MALLORY)
    ),
    "signature replayed from another command": lambda c: replace(c, signature=OTHER.signature),
    "signature from another domain": lambda c: replace(
        c, signature=sign(ALICE.key, VERDICT_DOMAIN, payload(c))
    ),
}


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_every_tampered_command_is_refused(name: str) -> None:
    forged = through_the_wire(TAMPERED[name](SIGNED))
    why = KEYS.refusal(forged)
    assert why is not None and forged.command_id in why, name
    assert admit(KEYS, forged) is not None


def test_a_refusal_says_why(caplog: pytest.LogCaptureFixture) -> None:
    assert "not signed" in (KEYS.unverified(replace(SIGNED, signature="")) or "")
    assert "names no operator key" in (KEYS.unverified(replace(SIGNED, issued_by="eve")) or "")
    assert "does not verify with alice's key" in (
        KEYS.unverified(replace(SIGNED, reason="edited")) or ""
    )
    with caplog.at_level(logging.WARNING, "loopline.control"):
        refused = admit(KEYS, replace(SIGNED, signature=""))
    assert refused is not None and "not signed" in refused.why
    assert "refusing a control command issued as alice" in caplog.text


def test_without_keys_nothing_is_refused_and_everything_is_unverified() -> None:
    none = OperatorKeys({})
    unsigned = pause()
    assert not none.enforced
    assert none.refusal(unsigned) is None
    assert none.refusal(SIGNED) is None
    assert none.unverified(SIGNED) == "no operator keys configured"


def _dev(**values: str) -> Settings:
    return Settings.from_env({"LOOPLINE_ENV": "dev"}, **values)


def test_operator_keys_from_a_directory_or_a_list(tmp_path: Path) -> None:
    alice = write_operator_pair(tmp_path, "alice")
    monitor = write_operator_pair(tmp_path, "streams.health")
    from_dir = operator_keys(_dev(operator_keys=str(tmp_path / "operators")))
    assert sorted(from_dir.keys) == ["alice", "streams.health"]
    inline = f"alice={alice.public.read_text().strip()}"
    from_list = operator_keys(_dev(operator_keys=f"{inline}, {monitor.public}"))
    assert sorted(from_list.keys) == ["alice", "streams.health"]
    assert public_bytes(from_list.keys["alice"]) == public_bytes(from_dir.keys["alice"])
    signer = operator(_dev(operator_key=str(alice.private)))
    assert signer is not None and signer.name == "alice"
    signed = sign_command(pause(), signer)
    assert from_dir.refusal(signed) is None and from_list.refusal(signed) is None
    inline_private = operator(
        _dev(operator_key=f"streams.health={monitor.private.read_text().strip()}")
    )
    assert inline_private is not None and inline_private.name == "streams.health"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("alice=AAAA, alice=BBBB", "LOOPLINE_OPERATOR_KEYS"),
        ("noname.txt", "neither NAME=base64 nor a key file named NAME.pub"),
        ("bad name=" + encode(bytes(32)), "LOOPLINE_OPERATOR_KEYS"),
        ("alice=s3cret", "LOOPLINE_OPERATOR_KEYS: not an Ed25519 key"),
    ],
)
def test_bad_operator_keys_name_the_setting(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        operator_keys(_dev(operator_keys=value))


def test_two_keys_for_one_operator_are_refused() -> None:
    key = encode(public_bytes(ALICE.key.public_key()))
    with pytest.raises(ConfigError, match="two keys for operator 'alice'"):
        operator_keys(_dev(operator_keys=f"alice={key},alice={key}"))


def test_an_empty_key_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no NAME.pub files"):
        operator_keys(_dev(operator_keys=str(tmp_path)))


def test_readers_without_operator_keys_refuse_outside_development_only() -> None:
    with pytest.raises(ConfigError, match="LOOPLINE_OPERATOR_KEYS is not set.*LOOPLINE_ENV=dev"):
        operator_keys(Settings.from_env({}))
    assert not operator_keys(_dev()).enforced


def test_issue_signs_with_the_operator_key_and_refuses_unsigned_outside_development(
    tmp_path: Path,
) -> None:
    alice = write_operator_pair(tmp_path, "alice")
    signed = issue(_dev(operator_key=str(alice.private)), CommandKind.PAUSE, reason="r")
    assert signed.issued_by == "alice" and signed.signature
    keys = operator_keys(_dev(operator_keys=str(tmp_path / "operators")))
    assert keys.refusal(through_the_wire(signed)) is None
    unsigned = issue(_dev(), CommandKind.PAUSE, issued_by="streams.health")
    assert (unsigned.issued_by, unsigned.signature) == ("streams.health", "")
    with pytest.raises(ConfigError, match="LOOPLINE_OPERATOR_KEY is not set"):
        issue(Settings.from_env({}), CommandKind.PAUSE)


@pytest.mark.parametrize("worker", ["trainer", "pusher"])
def test_a_control_reader_refuses_to_start_without_operator_keys(
    tmp_path: Path, worker: str
) -> None:
    settings = production(tmp_path)
    settings = settings.replace(
        operator_keys=None, **{"pusher_signing_key" if worker == "trainer" else "signing_key": None}
    )
    with pytest.raises(ConfigError, match="refuses to start.*LOOPLINE_OPERATOR_KEYS is not set"):
        require_safe(settings, worker)  # type: ignore[arg-type]
    require_safe(settings.replace(env="dev"), worker)  # type: ignore[arg-type]


def test_streams_refuses_to_start_without_its_operator_key_when_it_auto_pauses(
    tmp_path: Path,
) -> None:
    settings = production(tmp_path).replace(signing_key=None, pusher_signing_key=None)
    found = refusals(settings, "streams")
    assert any("LOOPLINE_OPERATOR_KEY is not set" in f for f in found), found
    assert not refusals(settings.replace(env="dev"), "streams")


def test_an_operator_key_held_by_a_worker_that_issues_nothing_is_refused(tmp_path: Path) -> None:
    alice = write_operator_pair(tmp_path / "ops", "alice")
    settings = production(tmp_path).replace(
        pusher_signing_key=None, operator_key=str(alice.private)
    )
    found = refusals(settings, "trainer")
    assert any("LOOPLINE_OPERATOR_KEY is set for trainer" in f for f in found), found


def test_a_trainer_started_without_operator_or_holdout_keys_refuses_and_names_them(
    tmp_path: Path,
) -> None:
    settings = production(tmp_path).replace(
        pusher_signing_key=None, operator_keys=None, holdout_key=None, state_dir=tmp_path
    )
    env = settings.process_env({k: v for k, v in os.environ.items() if k != "LOOPLINE_ENV"})
    returncode, said = run_worker("trainer", env)
    assert returncode == 2, said
    assert "trainer refuses to start outside development mode" in said, said
    for setting in ("LOOPLINE_OPERATOR_KEYS is not set", "LOOPLINE_HOLDOUT_KEY is not set"):
        assert setting in said, setting
    assert "LOOPLINE_SIGNING_KEY" not in said  # the keys it holds are fine
