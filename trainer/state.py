"""The trainer's own state beside a checkpoint: progressive metrics and counters.

The model blob stays a plain estimator (what the pusher and serving load); this JSON
file, ``<id>.state``, carries what the trainer needs to resume its metrics
exactly. It is signed with the trainer's private key and bound to the checkpoint id,
and written before the checkpoint, so every manifest has one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loopline.signing.keys import sign, verify

log = logging.getLogger(__name__)

SUFFIX = ".state"


def path_of(directory: Path, checkpoint_id: str) -> Path:
    return directory / f"{checkpoint_id}{SUFFIX}"


DOMAIN = b"loopline-trainer-state-v1"


def _body(checkpoint_id: str, state: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"checkpoint_id": checkpoint_id, "state": state},
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    )


def save_state(
    directory: Path, checkpoint_id: str, state: dict[str, Any], key: Ed25519PrivateKey
) -> None:
    """Write the state atomically (temp file, fsync, rename)."""
    document = {
        "checkpoint_id": checkpoint_id,
        "state": state,
        "signature": sign(key, DOMAIN, _body(checkpoint_id, state)),
    }
    path = path_of(directory, checkpoint_id)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(
    directory: Path, checkpoint_id: str, key: Ed25519PrivateKey
) -> dict[str, Any] | None:
    """The verified state of a checkpoint, or None (logged) if missing or not genuine."""
    path = path_of(directory, checkpoint_id)
    try:
        document = orjson.loads(path.read_bytes())
        state = document["state"]
        genuine = document["checkpoint_id"] == checkpoint_id and verify(
            key.public_key(), DOMAIN, _body(checkpoint_id, state), str(document["signature"])
        )
    except FileNotFoundError:
        log.error("checkpoint %s has no trainer state; metrics restart from zero", checkpoint_id)
        return None
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        log.error("trainer state of %s is unreadable (%s); metrics restart", checkpoint_id, exc)
        return None
    if not genuine:
        log.error("trainer state of %s fails its signature; metrics restart", checkpoint_id)
        return None
    return state  # type: ignore[no-any-return]


def delete_orphans(directory: Path, prefix: str) -> list[str]:
    """Remove states (ids starting with ``prefix``) whose checkpoint is gone."""
    removed = []
    for path in directory.glob(f"{prefix}*{SUFFIX}"):
        checkpoint_id = path.name.removesuffix(SUFFIX)
        if not (directory / f"{checkpoint_id}.json").exists():
            path.unlink(missing_ok=True)
            removed.append(checkpoint_id)
    return removed
