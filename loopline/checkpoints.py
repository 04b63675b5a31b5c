"""The checkpoint store: model blobs with signed manifests, in a directory.

A checkpoint is two files, ``<id>.model`` (the pickled estimator) and ``<id>.json``
(its :class:`~loopline.contracts.CheckpointManifest`). Each is written to a temporary
file, fsynced and renamed into place, blob first: a manifest on disk means a complete
checkpoint. Nothing is unpickled before its sha256 and HMAC signature verify.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from loopline.contracts import CheckpointManifest, Window
from loopline.errors import CheckpointError, RecordError

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


def sign(manifest: CheckpointManifest, key: bytes) -> CheckpointManifest:
    """The manifest with its HMAC-SHA256 signature over every other field."""
    return replace(
        manifest, signature=hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()
    )


def signature_valid(manifest: CheckpointManifest, key: bytes) -> bool:
    expected = hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()
    return bool(manifest.signature) and hmac.compare_digest(expected, manifest.signature)


def verify(manifest: CheckpointManifest, blob: bytes, key: bytes) -> None:
    """Raise :class:`CheckpointError` unless the signature and the blob's hash check out."""
    if not signature_valid(manifest, key):
        raise CheckpointError(f"checkpoint {manifest.checkpoint_id}: signature missing or invalid")
    digest = hashlib.sha256(blob).hexdigest()
    if not hmac.compare_digest(digest, manifest.blob_sha256):
        raise CheckpointError(
            f"checkpoint {manifest.checkpoint_id}: blob sha256 {digest} != manifest {manifest.blob_sha256}"
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
    """Signed checkpoints in one directory."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self._key = key
        directory.mkdir(parents=True, exist_ok=True)

    def _paths(self, checkpoint_id: str) -> tuple[Path, Path]:
        if not checkpoint_id or "/" in checkpoint_id or checkpoint_id.startswith("."):
            raise CheckpointError(f"invalid checkpoint id {checkpoint_id!r}")
        return self.directory / f"{checkpoint_id}.model", self.directory / f"{checkpoint_id}.json"

    def save(self, manifest: CheckpointManifest, model: Any) -> CheckpointManifest:
        """Write a checkpoint; fills in ``blob_sha256`` and ``signature``; returns the manifest."""
        blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        signed = sign(replace(manifest, blob_sha256=hashlib.sha256(blob).hexdigest()), self._key)
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
        verify(manifest, blob, self._key)
        return manifest, blob

    def verified(self, checkpoint_id: str) -> CheckpointManifest:
        """The manifest of a checkpoint that verifies (nothing unpickled); CheckpointError otherwise."""
        return self._verified(checkpoint_id)[0]

    def load(self, checkpoint_id: str) -> tuple[CheckpointManifest, Any]:
        """A verified checkpoint's manifest and model; :class:`CheckpointError` otherwise."""
        manifest, blob = self._verified(checkpoint_id)
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
