"""The holdout slice: a keyed, deterministic share of events, by event id, that no model learns.

The trainer skips these examples and the pusher qualifies checkpoints on them, so both
must hold the same key (``LOOPLINE_HOLDOUT_KEY``). The position of an event is a keyed
blake2b of its id: producers choose event ids, and without the key they cannot tell
which ids fall in the holdout, so they cannot aim mislabelled records at it.

Development mode (``LOOPLINE_ENV=dev``) falls back to a published development key;
anywhere else the key must be set, and the development one is refused.

>>> slice_ = Holdout(0.0, DEVELOPMENT_KEY), Holdout(1.0, DEVELOPMENT_KEY)
>>> "e-1" in slice_[0], "e-1" in slice_[1]
(False, True)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from loopline.errors import ConfigError
from loopline.settings import ENV_PREFIX, Settings

_SCALE = 2**64
#: The shortest key accepted (what ``loopline keys new`` writes is 44 characters).
MIN_KEY_CHARS = 16
#: Published, so anyone can compute the slice with it: development mode only.
DEVELOPMENT_KEY = hashlib.sha256(
    b"loopline development holdout key (public, never secret)"
).digest()


def parse_key(value: str) -> bytes:
    """The key a setting names: the text of a key file, or the value itself."""
    text = value.strip()
    with contextlib.suppress(OSError, ValueError):
        path = Path(text).expanduser()
        if path.is_file():
            text = path.read_text().strip()
    if len(text) < MIN_KEY_CHARS:
        msg = (
            f"{ENV_PREFIX}HOLDOUT_KEY: a holdout key is at least {MIN_KEY_CHARS} characters "
            "(or the path of a key file); `loopline keys new --out DIR` writes one"
        )
        raise ConfigError(msg)
    return hashlib.sha256(text.encode()).digest()


def holdout_key(settings: Settings) -> bytes:
    """The key of the holdout slice; the development one only in development mode."""
    secret = settings.holdout_key
    if secret is None:
        if settings.dev:
            return DEVELOPMENT_KEY
        msg = (
            f"{ENV_PREFIX}HOLDOUT_KEY is not set: the trainer and the pusher choose the holdout "
            "slice with a shared secret key (`loopline keys new --out DIR` writes one), or set "
            f"{ENV_PREFIX}ENV=dev for development"
        )
        raise ConfigError(msg)
    key = parse_key(secret.get_secret_value())
    if key == DEVELOPMENT_KEY and not settings.dev:
        raise ConfigError(f"{ENV_PREFIX}HOLDOUT_KEY holds the published development key")
    return key


def new_key() -> str:
    """A fresh random holdout key, as ``LOOPLINE_HOLDOUT_KEY`` or its key file holds it."""
    return base64.b64encode(os.urandom(32)).decode()


def holdout_position(event_id: str, key: bytes) -> float:
    """A stable number in [0, 1) derived from the event id under ``key``."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8, key=key).digest()
    return int.from_bytes(digest, "big") / _SCALE


@dataclass(frozen=True, slots=True)
class Holdout:
    """The events whose keyed position falls under ``fraction``."""

    fraction: float
    key: bytes

    def __contains__(self, event_id: object) -> bool:
        if not self.fraction or not isinstance(event_id, str):
            return False
        return holdout_position(event_id, self.key) < self.fraction

    @classmethod
    def of(cls, settings: Settings, fraction: float) -> Holdout:
        return cls(fraction, holdout_key(settings))
