"""Signed Commands: an operator's identity on ``control`` is the key that signed it.

An operator (or an automatic issuer: the streams' data-health monitor) holds an
Ed25519 private key under a name, ``LOOPLINE_OPERATOR_KEY``. Each Command it issues
carries ``issued_by`` = that name and a ``signature`` over the Command's canonical
form: every field but the signature (id, kind, scope, issued_at, issued_by, reason,
args, evidence, schema_version), as JSON with sorted keys. Changing any of them, the
name included, breaks the signature; a signature copied onto another Command does not
verify, because the command id, kind, args and time it covers are that Command's.
The same Command sent twice is one Command: readers drop it by ``command_id``.

Readers of ``control`` hold the operators' public keys, ``LOOPLINE_OPERATOR_KEYS``,
and apply a Command only if the key ``issued_by`` names verifies its signature.
Outside development mode a reader refuses to start without them; in development
mode (``LOOPLINE_ENV=dev``) with none configured, every Command applies and
``loopline history`` marks each one unverified.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from loopline.contracts import Command
from loopline.errors import ConfigError
from loopline.settings import ENV_PREFIX, Settings
from loopline.signing.keys import (
    KeyFiles,
    encode,
    parse_private,
    parse_public,
    private_bytes,
    public_bytes,
    sign,
    verify,
    write_secret,
)

DOMAIN = b"loopline-command-v1"
#: an operator's name: what ``issued_by`` says and its key files are called
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
KEYS_SETTING = f"{ENV_PREFIX}OPERATOR_KEYS"
KEY_SETTING = f"{ENV_PREFIX}OPERATOR_KEY"
#: the operator name the streams' data-health monitor signs its auto-pauses as
MONITOR = "streams.health"


@dataclass(frozen=True)
class Operator:
    """A named private key that signs Commands."""

    name: str
    key: Ed25519PrivateKey


def payload(command: Command) -> bytes:
    """The canonical form a signature covers: every field but ``signature``, sorted JSON."""
    document = orjson.loads(command.to_json())
    del document["signature"]
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def sign_command(command: Command, operator: Operator) -> Command:
    """The Command issued by ``operator``: its name as ``issued_by``, and its signature."""
    named = replace(command, issued_by=operator.name, signature="")
    return replace(named, signature=sign(operator.key, DOMAIN, payload(named)))


@dataclass(frozen=True)
class OperatorKeys:
    """The operators a reader accepts Commands from: name -> public key.

    Empty means none are configured (development mode only): every Command applies.
    """

    keys: Mapping[str, Ed25519PublicKey]

    @property
    def enforced(self) -> bool:
        return bool(self.keys)

    def unverified(self, command: Command) -> str | None:
        """Why the signature does not prove who issued the Command; None when it does."""
        if not self.keys:
            return "no operator keys configured"
        if not command.signature:
            return "not signed"
        key = self.keys.get(command.issued_by)
        if key is None:
            return f"signed as {command.issued_by!r}, which names no operator key"
        if not verify(key, DOMAIN, payload(command), command.signature):
            return f"the signature does not verify with {command.issued_by}'s key"
        return None

    def refusal(self, command: Command) -> str | None:
        """Why a reader must not apply the Command; None if it may."""
        if not self.enforced:
            return None
        why = self.unverified(command)
        return None if why is None else f"command {command.command_id} ({command.kind}) {why}"


def _split(item: str, suffix: str, setting: str) -> tuple[str, str]:
    """``NAME=base64`` or the path of ``NAME<suffix>``: the name and what holds the key."""
    head, sep, tail = item.partition("=")
    if sep and NAME.fullmatch(head) and not Path(item).exists():
        return head, tail
    path = Path(item).expanduser()
    name = path.name.removesuffix(suffix)
    if not path.name.endswith(suffix) or not NAME.fullmatch(name):
        msg = (
            f"{setting}: {item!r} is neither NAME=base64 nor a key file named NAME{suffix} "
            f"(names are letters, digits and ._@-; `loopline keys new --operator NAME` writes one)"
        )
        raise ConfigError(msg)
    return name, str(path)


def operator(settings: Settings) -> Operator | None:
    """The operator this process signs as (``LOOPLINE_OPERATOR_KEY``), None if unset."""
    if settings.operator_key is None:
        return None
    name, value = _split(settings.operator_key.get_secret_value().strip(), ".key", KEY_SETTING)
    return Operator(name, parse_private(value, "operator_key"))


def _items(value: str) -> list[str]:
    path = Path(value.strip()).expanduser()
    if path.is_dir():
        found = sorted(str(p) for p in path.glob("*.pub"))
        if not found:
            raise ConfigError(f"{KEYS_SETTING}: {path} holds no NAME.pub files")
        return found
    return [item.strip() for item in value.split(",") if item.strip()]


def operator_keys(settings: Settings) -> OperatorKeys:
    """The operators' public keys (``LOOPLINE_OPERATOR_KEYS``); empty only in development
    mode when unset. Outside it, a reader without them refuses to start."""
    if settings.operator_keys is None:
        if settings.dev:
            return OperatorKeys({})
        msg = (
            f"{KEYS_SETTING} is not set: readers of control apply only Commands signed by an "
            "operator key, so they need the operators' public keys (a directory of NAME.pub "
            "files from `loopline keys new --operator NAME`, or NAME=base64,...), or set "
            f"{ENV_PREFIX}ENV=dev for development"
        )
        raise ConfigError(msg)
    keys: dict[str, Ed25519PublicKey] = {}
    for item in _items(settings.operator_keys):
        name, value = _split(item, ".pub", KEYS_SETTING)
        if name in keys:
            raise ConfigError(f"{KEYS_SETTING}: two keys for operator {name!r}")
        keys[name] = parse_public(value, "operator_keys")
    if not keys:
        raise ConfigError(f"{KEYS_SETTING}: no operator key in {settings.operator_keys!r}")
    return OperatorKeys(keys)


def require_operator(settings: Settings, what: str) -> Operator | None:
    """The operator to sign ``what`` as; None (unsigned) only in development mode."""
    found = operator(settings)
    if found is None and not settings.dev:
        msg = (
            f"{KEY_SETTING} is not set: {what} must be signed by an operator key, or every "
            f"reader of control refuses it (`loopline keys new --operator NAME`), or set "
            f"{ENV_PREFIX}ENV=dev for development"
        )
        raise ConfigError(msg)
    return found


def write_operator_pair(directory: Path, name: str, *, overwrite: bool = False) -> KeyFiles:
    """Write ``NAME.key`` (the operator's ``LOOPLINE_OPERATOR_KEY``, mode 0600) into
    ``directory`` and ``operators/NAME.pub`` beside it, the directory readers'
    ``LOOPLINE_OPERATOR_KEYS`` names."""
    if not NAME.fullmatch(name):
        raise ConfigError(f"operator name {name!r}: letters, digits and ._@- only, at most 64")
    files = KeyFiles(directory / f"{name}.key", directory / "operators" / f"{name}.pub")
    if not overwrite and (files.private.exists() or files.public.exists()):
        raise ConfigError(f"{files.private} or {files.public} exists: not overwriting a key")
    key = Ed25519PrivateKey.generate()
    write_secret(files.private, encode(private_bytes(key)), overwrite=True)
    files.public.parent.mkdir(parents=True, exist_ok=True)
    files.public.write_text(encode(public_bytes(key.public_key())) + "\n")
    return files
