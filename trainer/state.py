"""The trainer's own state beside a checkpoint: progressive metrics and counters.

The model blob stays a plain estimator (what the pusher and serving load); this JSON
file, ``<id>.state``, carries what the trainer needs to resume its metrics
exactly. It is HMAC-signed with the checkpoint signing key and bound to the
checkpoint id, and written before the checkpoint, so every manifest has one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

SUFFIX = ".state"


def path_of(directory: Path, checkpoint_id: str) -> Path:
    return directory / f"{checkpoint_id}{SUFFIX}"


def _signature(checkpoint_id: str, state: dict[str, Any], key: bytes) -> str:
    body = orjson.dumps(
        {"checkpoint_id": checkpoint_id, "state": state},
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    )
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def save_state(directory: Path, checkpoint_id: str, state: dict[str, Any], key: bytes) -> None:
    """Write the state atomically (temp file, fsync, rename)."""
    document = {
        "checkpoint_id": checkpoint_id,
        "state": state,
        "signature": _signature(checkpoint_id, state, key),
    }
    path = path_of(directory, checkpoint_id)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(directory: Path, checkpoint_id: str, key: bytes) -> dict[str, Any] | None:
    """The verified state of a checkpoint, or None (logged) if missing or not genuine."""
    path = path_of(directory, checkpoint_id)
    try:
        document = orjson.loads(path.read_bytes())
        state = document["state"]
        genuine = document["checkpoint_id"] == checkpoint_id and hmac.compare_digest(
            _signature(checkpoint_id, state, key), str(document["signature"])
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
