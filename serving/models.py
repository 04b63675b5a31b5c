"""Verified models by checkpoint id: serving never unpickles what does not verify.

A checkpoint loads only if its manifest verifies with the trainer's public key and
names the id asked for, its blob has the signed sha256
(:class:`~loopline.checkpoints.CheckpointStore`), the pusher's verdict on exactly that
manifest says qualified and verifies with the pusher's public key
(:mod:`loopline.signing.verdicts`), and it was trained on serving's feature schema.
Serving holds public keys only: it can check both signatures, never make one. A refusal is remembered with its reason and retried only after
``retry_seconds``, so a bad checkpoint in the routing table costs no request time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from loopline.checkpoints import CheckpointStore, manifest_sha256
from loopline.contracts import CheckpointManifest
from loopline.errors import CheckpointError
from loopline.signing import verdict_refusal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Loaded:
    manifest: CheckpointManifest
    model: Any


class ModelCache:
    def __init__(
        self,
        store: CheckpointStore,
        schema_hash: str,
        verdicts: Callable[[str], dict[str, Any] | None],
        pusher_key: Ed25519PublicKey,
        retry_seconds: float = 5.0,
    ) -> None:
        self._store = store
        self._verdicts = verdicts
        self._pusher_key = pusher_key
        self._schema_hash = schema_hash
        self._retry = retry_seconds
        self._loaded: dict[str, Loaded] = {}
        self._refused: dict[str, tuple[str, float]] = {}

    @property
    def refused(self) -> dict[str, str]:
        return {cid: reason for cid, (reason, _) in self._refused.items()}

    def get(self, checkpoint_id: str) -> Loaded | None:
        """The verified model, or None if it is refused (see :attr:`refused` for why)."""
        loaded = self._loaded.get(checkpoint_id)
        if loaded is not None:
            return loaded
        refusal = self._refused.get(checkpoint_id)
        if refusal is not None and time.monotonic() - refusal[1] < self._retry:
            return None
        try:
            verdict = self._verdicts(checkpoint_id)

            def accept(manifest: CheckpointManifest) -> None:  # before anything is unpickled
                refusal = verdict_refusal(
                    verdict, checkpoint_id, manifest_sha256(manifest), self._pusher_key
                )
                if refusal is not None:
                    raise CheckpointError(refusal)
                if manifest.schema_hash != self._schema_hash:
                    msg = f"checkpoint {checkpoint_id}: feature schema {manifest.schema_hash} != serving's {self._schema_hash}"
                    raise CheckpointError(msg)

            manifest, model = self._store.load(checkpoint_id, accept)
        except CheckpointError as exc:
            log.error("refusing to serve: %s", exc)
            self._refused[checkpoint_id] = (str(exc), time.monotonic())
            return None
        except Exception as exc:  # an unpicklable blob must not stop the routing follower
            log.exception("cannot load checkpoint %s", checkpoint_id)
            self._refused[checkpoint_id] = (f"cannot load: {exc!r}", time.monotonic())
            return None
        self._refused.pop(checkpoint_id, None)
        loaded = Loaded(manifest, model)
        self._loaded[checkpoint_id] = loaded
        return loaded

    def manifest(self, checkpoint_id: str) -> CheckpointManifest | None:
        """The manifest of a model already loaded; never loads."""
        loaded = self._loaded.get(checkpoint_id)
        return None if loaded is None else loaded.manifest

    def keep_only(self, checkpoint_ids: set[str]) -> None:
        """Forget models no table uses any more."""
        for cid in set(self._loaded) - checkpoint_ids:
            del self._loaded[cid]
