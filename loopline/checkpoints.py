"""The checkpoint store: model blobs with signed manifests, in a directory.

A checkpoint is two files, ``<id>.model`` (the pickled estimator) and ``<id>.json``
(its :class:`~loopline.contracts.CheckpointManifest`). Each is written to a temporary
file, fsynced and renamed into place, blob first: a manifest on disk means a complete
checkpoint.

The trainer signs every manifest field (its id and the blob's sha256 among them) with
its Ed25519 private key; every reader verifies with the trainer's public key, which
cannot sign. Nothing is unpickled before the signature verifies, the blob's sha256 is
the signed one and the signed id is the id asked for: ``A.*`` copied to ``B.*`` is
refused as B, so an old model never comes back under a fresh id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from loopline.contracts import CheckpointManifest, Window
from loopline.errors import CheckpointError, RecordError
from loopline.settings import Settings
from loopline.signing import keys

DOMAIN = b"loopline-checkpoint-v1"

log = logging.getLogger(__name__)


def _utc(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.astimezone(UTC)


def _canonical(manifest: CheckpointManifest) -> bytes:
    # Signed as it reads back from the wire (float metrics, UTC times), so a manifest
    # built with int metrics or another UTC offset still verifies after a round trip.
    unsigned = replace(
        manifest,
        signature="",
        metrics={k: None if v is None else float(v) for k, v in manifest.metrics.items()},
        created_at=manifest.created_at.astimezone(UTC),
        event_time_min=_utc(manifest.event_time_min),
        event_time_max=_utc(manifest.event_time_max),
        excluded_windows=tuple(
            Window(w.start.astimezone(UTC), w.end.astimezone(UTC))
            for w in manifest.excluded_windows
        ),
    )
    return orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def sign(manifest: CheckpointManifest, key: Ed25519PrivateKey) -> CheckpointManifest:
    """The manifest with its Ed25519 signature over every other field."""
    return replace(manifest, signature=keys.sign(key, DOMAIN, _canonical(manifest)))


def signature_valid(manifest: CheckpointManifest, key: Ed25519PublicKey) -> bool:
    return bool(manifest.signature) and keys.verify(
        key, DOMAIN, _canonical(manifest), manifest.signature
    )


def manifest_sha256(manifest: CheckpointManifest) -> str:
    """The digest of a signed manifest, signature included: what a verdict is bound to."""
    body = _canonical(manifest) + b"\n" + manifest.signature.encode()
    return hashlib.sha256(body).hexdigest()


def verify(
    manifest: CheckpointManifest, blob: bytes, key: Ed25519PublicKey, checkpoint_id: str
) -> None:
    """Raise :class:`CheckpointError` unless the signature, the signed id and the blob's
    hash check out."""
    if not signature_valid(manifest, key):
        raise CheckpointError(f"checkpoint {checkpoint_id}: signature missing or invalid")
    if manifest.checkpoint_id != checkpoint_id:
        raise CheckpointError(
            f"checkpoint {checkpoint_id}: its manifest is signed as {manifest.checkpoint_id}"
        )
    digest = hashlib.sha256(blob).hexdigest()
    if not hmac.compare_digest(digest, manifest.blob_sha256):
        raise CheckpointError(
            f"checkpoint {checkpoint_id}: blob sha256 {digest} != manifest {manifest.blob_sha256}"
        )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    # The rename is durable only once the directory entry is.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class CheckpointStore:
    """Signed checkpoints in one directory: verified with the trainer's public key, and
    written only by a store that holds its private key."""

    def __init__(
        self,
        directory: Path,
        public_key: Ed25519PublicKey,
        private_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.directory = directory
        self._public = public_key
        self._private = private_key
        directory.mkdir(parents=True, exist_ok=True)

    @classmethod
    def of(cls, settings: Settings, *, signing: bool = False) -> CheckpointStore:
        """The store at ``checkpoint_dir``; ``signing`` (the trainer only) holds the private key."""
        private = keys.private_key(settings, "trainer") if signing else None
        public = private.public_key() if private else keys.public_key(settings, "trainer")
        return cls(settings.checkpoint_dir, public, private)

    def _paths(self, checkpoint_id: str) -> tuple[Path, Path]:
        if not checkpoint_id or "/" in checkpoint_id or checkpoint_id.startswith("."):
            raise CheckpointError(f"invalid checkpoint id {checkpoint_id!r}")
        return self.directory / f"{checkpoint_id}.model", self.directory / f"{checkpoint_id}.json"

    def save(self, manifest: CheckpointManifest, model: Any) -> CheckpointManifest:
        """Write a checkpoint; fills in ``blob_sha256`` and ``signature``; returns the manifest."""
        if self._private is None:
            raise CheckpointError("this checkpoint store only verifies: it holds no signing key")
        blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        signed = sign(
            replace(manifest, blob_sha256=hashlib.sha256(blob).hexdigest()), self._private
        )
        blob_path, manifest_path = self._paths(signed.checkpoint_id)
        _write_atomic(blob_path, blob)
        _write_atomic(manifest_path, signed.to_json())
        return signed

    def manifest(self, checkpoint_id: str) -> CheckpointManifest:
        _, manifest_path = self._paths(checkpoint_id)
        try:
            return CheckpointManifest.from_json(manifest_path.read_bytes())
        except FileNotFoundError:
            raise CheckpointError(f"no checkpoint {checkpoint_id!r} in {self.directory}") from None
        except RecordError as exc:
            raise CheckpointError(
                f"checkpoint {checkpoint_id}: unreadable manifest: {exc}"
            ) from None

    def manifests(self, model_name: str | None = None) -> list[CheckpointManifest]:
        """Readable manifests, newest first (unverified: use :meth:`load` to trust one)."""
        found = []
        for path in self.directory.glob("*.json"):
            try:
                manifest = self.manifest(path.stem)
            except CheckpointError as exc:
                log.error("skipping %s: %s", path, exc)
                continue
            if model_name is None or manifest.model_name == model_name:
                found.append(manifest)
        return sorted(found, key=lambda m: (m.created_at, m.examples_seen), reverse=True)

    def _verified(self, checkpoint_id: str) -> tuple[CheckpointManifest, bytes]:
        manifest = self.manifest(checkpoint_id)
        blob_path, _ = self._paths(checkpoint_id)
        try:
            blob = blob_path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {checkpoint_id}: model blob is missing") from None
        verify(manifest, blob, self._public, checkpoint_id)
        return manifest, blob

    def verified(self, checkpoint_id: str) -> CheckpointManifest:
        """The manifest of a checkpoint that verifies (nothing unpickled); CheckpointError otherwise."""
        return self._verified(checkpoint_id)[0]

    def load(
        self, checkpoint_id: str, accept: Callable[[CheckpointManifest], None] | None = None
    ) -> tuple[CheckpointManifest, Any]:
        """A verified checkpoint's manifest and model; :class:`CheckpointError` otherwise.

        ``accept`` sees the verified manifest before anything is unpickled and refuses it
        by raising :class:`CheckpointError` (serving checks the pusher's verdict there).
        """
        manifest, blob = self._verified(checkpoint_id)
        if accept is not None:
            accept(manifest)
        return manifest, pickle.loads(blob)

    def latest(
        self, model_name: str, lineage: str | None = None
    ) -> tuple[CheckpointManifest, Any] | None:
        """The newest checkpoint that verifies; bad ones are skipped loudly, never unpickled."""
        for manifest in self.manifests(model_name):
            if lineage is not None and manifest.lineage != lineage:
                continue
            try:
                return self.load(manifest.checkpoint_id)
            except CheckpointError as exc:
                log.error("refusing checkpoint: %s", exc)
        return None

    def delete(self, checkpoint_id: str) -> None:
        for path in self._paths(checkpoint_id):
            path.unlink(missing_ok=True)

    def prune(self, model_name: str, keep: int, protect: frozenset[str] = frozenset()) -> list[str]:
        """Keep the newest ``keep`` checkpoints plus every protected id; return what was deleted."""
        deleted = []
        for manifest in self.manifests(model_name)[keep:]:
            if manifest.checkpoint_id not in protect:
                self.delete(manifest.checkpoint_id)
                deleted.append(manifest.checkpoint_id)
        return deleted
