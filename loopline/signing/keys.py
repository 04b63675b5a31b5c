"""Ed25519 keys: parsing, key files, the development pair, and which key a role holds.

A key setting holds the raw 32-byte key in base64, or the path of a file holding it
(what ``loopline keys new`` writes). The trainer signs checkpoints with its private
key and the pusher signs verdicts with its own; the pusher and serving hold only
public keys, so a process that verifies can never sign.

The development pair is derived from fixed, published seeds: anyone can sign with it,
so it is accepted only in development mode (``LOOPLINE_ENV=dev``), and a setting that
holds it outside development mode is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loopline.errors import ConfigError
from loopline.settings import ENV_PREFIX, Settings

Signer = Literal["trainer", "pusher"]

#: setting of each signer's private key and of its public key
SETTINGS: dict[Signer, tuple[str, str]] = {
    "trainer": ("signing_key", "trainer_public_key"),
    "pusher": ("pusher_signing_key", "pusher_public_key"),
}


def _development_private(signer: Signer) -> Ed25519PrivateKey:
    seed = hashlib.sha256(f"loopline development {signer} key (public, never secret)".encode())
    return Ed25519PrivateKey.from_private_bytes(seed.digest())


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def private_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


DEVELOPMENT_PUBLIC: dict[Signer, bytes] = {
    signer: public_bytes(_development_private(signer).public_key()) for signer in SETTINGS
}


def is_development(key: Ed25519PublicKey | Ed25519PrivateKey) -> bool:
    """Whether this is (half of) a well-known development key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public_bytes(public) in DEVELOPMENT_PUBLIC.values()


def _raw(value: str, setting: str) -> bytes:
    text = value.strip()
    if not (len(text) == 44 and text.endswith("=")):  # not inline base64: a key file
        with contextlib.suppress(OSError):
            text = Path(text).expanduser().read_text().strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        msg = (
            f"{ENV_PREFIX}{setting.upper()}: not an Ed25519 key (base64 of 32 bytes, or a key "
            "file path); make a key pair with `loopline keys new --out DIR`"
        )
        raise ConfigError(msg)
    return raw


def parse_private(value: str, setting: str = "signing_key") -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_raw(value, setting))


def parse_public(value: str, setting: str = "trainer_public_key") -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_raw(value, setting))


def _refuse_development(settings: Settings, setting: str) -> None:
    if not settings.dev:
        msg = (
            f"{ENV_PREFIX}{setting.upper()} holds the well-known development key, which anyone "
            f"can sign with: set your own (`loopline keys new --out DIR`), or {ENV_PREFIX}ENV=dev "
            "for development"
        )
        raise ConfigError(msg)


def private_key(settings: Settings, signer: Signer) -> Ed25519PrivateKey:
    """The signer's private key; the development one only in development mode."""
    setting = SETTINGS[signer][0]
    secret = getattr(settings, setting)
    if secret is None:
        if settings.dev:
            return _development_private(signer)
        msg = (
            f"{ENV_PREFIX}{setting.upper()} is not set: the {signer} signs with its own Ed25519 "
            f"key (`loopline keys new --out DIR`), or set {ENV_PREFIX}ENV=dev for development"
        )
        raise ConfigError(msg)
    key = parse_private(secret.get_secret_value(), setting)
    if is_development(key):
        _refuse_development(settings, setting)
    return key


def public_key(settings: Settings, signer: Signer) -> Ed25519PublicKey:
    """The signer's public key: its setting, else derived from the private key if this
    process holds it, else (development mode only) the development one."""
    private_setting, setting = SETTINGS[signer]
    value: str | None = getattr(settings, setting)
    if value is None:
        if getattr(settings, private_setting) is not None:
            return private_key(settings, signer).public_key()
        if settings.dev:
            return _development_private(signer).public_key()
        msg = (
            f"{ENV_PREFIX}{setting.upper()} is not set: checkpoints and verdicts are verified "
            f"with the {signer}'s public key (`loopline keys new --out DIR` writes it), or set "
            f"{ENV_PREFIX}ENV=dev for development"
        )
        raise ConfigError(msg)
    key = parse_public(value, setting)
    if is_development(key):
        _refuse_development(settings, setting)
    return key


def development_private_key(signer: Signer) -> Ed25519PrivateKey:
    """The well-known development key (for development mode and tests only)."""
    return _development_private(signer)


def sign(key: Ed25519PrivateKey, domain: bytes, payload: bytes) -> str:
    """A base64 signature over ``payload`` in ``domain``, so a signature made for one kind
    of document never verifies as another."""
    return encode(key.sign(domain + b"\n" + payload))


def verify(key: Ed25519PublicKey, domain: bytes, payload: bytes, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, domain + b"\n" + payload)
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class KeyFiles:
    private: Path
    public: Path


def write_key_pair(directory: Path, signer: Signer, *, overwrite: bool = False) -> KeyFiles:
    """Write ``<signer>.key`` (private, mode 0600) and ``<signer>.pub`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = KeyFiles(directory / f"{signer}.key", directory / f"{signer}.pub")
    if not overwrite and (files.private.exists() or files.public.exists()):
        msg = f"{files.private} or {files.public} exists: not overwriting a key"
        raise ConfigError(msg)
    key = Ed25519PrivateKey.generate()
    write_secret(files.private, encode(private_bytes(key)), overwrite=True)
    files.public.write_text(encode(public_bytes(key.public_key())) + "\n")
    return files


def write_secret(path: Path, text: str, *, overwrite: bool = False) -> Path:
    """Write one secret line to ``path``, readable by its owner only (mode 0600)."""
    if not overwrite and path.exists():
        raise ConfigError(f"{path} exists: not overwriting a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path
