"""Checkpoints of a learner: restore, save, announce, retain.

Order matters and the trainer keeps it: save (model, manifest and trainer state,
atomically) -> commit offsets -> announce on ``checkpoints`` -> prune. A checkpoint's
offsets never go backwards from its parent's. Restoring takes the newest checkpoint
of the model whose signature and hash verify; bad ones are skipped loudly, never
unpickled (:class:`~loopline.checkpoints.CheckpointStore` guarantees it).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import redis
from confluent_kafka import Producer

from loopline.checkpoints import CheckpointStore
from loopline.contracts import CheckpointManifest, utcnow
from loopline.errors import CheckpointError
from loopline.holdout import holdout_key
from loopline.lease import Holder
from loopline.redis_client import redis_client
from loopline.settings import Settings
from loopline.signing import private_key
from loopline.spec import Spec
from loopline.windows import ExcludedWindows
from trainer.learner import Counts, Learner, dedup_horizon
from trainer.metrics import ProgressiveMetrics
from trainer.recent import RecentEvents
from trainer.state import delete_orphans, load_state, path_of, save_state

log = logging.getLogger(__name__)


def new_lineage() -> str:
    return uuid.uuid4().hex[:12]


def replay_lineage(command_id: str) -> str:
    """The lineage a replay command opens: derived from it, so a replay runs once."""
    return f"replay-{command_id}"


@dataclass(frozen=True)
class Restored:
    manifest: CheckpointManifest
    learner: Learner


class Checkpointer:
    """One model's checkpoints in the store, announced on ``checkpoints``."""

    def __init__(self, settings: Settings, spec: Spec, producer: Producer | None = None) -> None:
        self.settings = settings
        self.spec = spec
        self._key = private_key(settings, "trainer")
        self.holdout_key = holdout_key(settings)
        self.store = CheckpointStore.of(settings, signing=True)
        self._producer = producer
        self._redis: redis.Redis | None = None
        self._identity = (spec.spec_version, spec.schema_hash)

    def restore(self, windows: ExcludedWindows) -> Restored | None:
        """The newest verified checkpoint of this model, spec version and feature schema.

        A new spec version means a new model (another factory, params or features): it
        starts fresh, in a new lineage, and the pusher ramps it up against the old one.
        """
        for manifest in self.store.manifests(self.spec.name):
            if (manifest.spec_version, manifest.schema_hash) != self._identity:
                log.warning(
                    "checkpoint %s is spec v%s schema %s, the spec is v%s schema %s: not resuming it",
                    manifest.checkpoint_id,
                    manifest.spec_version,
                    manifest.schema_hash,
                    *self._identity,
                )
                continue
            try:
                return self.load(manifest.checkpoint_id, windows)
            except CheckpointError as exc:
                log.error("refusing checkpoint: %s", exc)
        return None

    def load(self, checkpoint_id: str, windows: ExcludedWindows) -> Restored:
        """A verified checkpoint as a learner; CheckpointError if it is not usable here."""
        manifest, model = self.store.load(checkpoint_id)
        if (
            manifest.model_name != self.spec.name
            or (manifest.spec_version, manifest.schema_hash) != self._identity
        ):
            raise CheckpointError(
                f"checkpoint {checkpoint_id} is model {manifest.model_name} v{manifest.spec_version} "
                f"schema {manifest.schema_hash}, not {self.spec.name} v{self.spec.spec_version} "
                f"schema {self.spec.schema_hash}"
            )
        return Restored(manifest, self._learner(manifest, model, windows))

    def _learner(
        self, manifest: CheckpointManifest, model: Any, windows: ExcludedWindows
    ) -> Learner:
        training = self.spec.training
        metrics = ProgressiveMetrics(training.metrics, training.metric_window_seconds)
        counts = Counts(learned=manifest.examples_seen, excluded=manifest.examples_excluded)
        recent = None
        state = load_state(self.settings.checkpoint_dir, manifest.checkpoint_id, self._key)
        if state is not None:
            metrics.load(state["metrics"])
            counts = Counts(**state["counts"])
            if "recent" in state:
                recent = RecentEvents.load(state["recent"], dedup_horizon(self.spec))
        if recent is None:
            log.warning(
                "checkpoint %s has no recent event ids: a duplicate of what it learned "
                "is not recognised",
                manifest.checkpoint_id,
            )
        return Learner(
            self.spec,
            model,
            windows,
            metrics,
            counts,
            (manifest.event_time_min, manifest.event_time_max),
            recent,
            holdout_key=self.holdout_key,
        )

    def save(
        self,
        learner: Learner,
        offsets: dict[int, int],
        parent: CheckpointManifest | None,
        lineage: str,
        writer: Holder | None = None,
    ) -> CheckpointManifest:
        """Write a signed checkpoint of the learner at ``offsets`` (next offset per partition);
        ``writer``, the lease it was written under, is recorded in the trainer state."""
        if parent is not None:
            for partition, offset in parent.offsets.items():
                if offsets.get(partition, -1) < offset:
                    raise CheckpointError(
                        f"refusing checkpoint: partition {partition} offset "
                        f"{offsets.get(partition)} is behind parent "
                        f"{parent.checkpoint_id}'s {offset}"
                    )
        now = utcnow()
        checkpoint_id = f"{self.spec.name}-{now:%Y%m%dT%H%M%S%f}-{os.urandom(3).hex()}"
        counts = learner.counts
        # Floats and UTC, exactly as the manifest decodes, so its signature verifies.
        metrics = {k: None if v is None else float(v) for k, v in learner.metrics.values().items()}
        metrics.update(
            examples_holdout=float(counts.holdout),
            examples_invalid=float(counts.invalid),
            examples_duplicate=float(counts.duplicates),
        )
        low, high = learner.event_time_min, learner.event_time_max
        manifest = CheckpointManifest(
            checkpoint_id=checkpoint_id,
            parent_id=parent.checkpoint_id if parent else None,
            model_name=self.spec.name,
            spec_version=self.spec.spec_version,
            schema_hash=self.spec.schema_hash,
            offsets=dict(sorted(offsets.items())),
            event_time_min=None if low is None else low.astimezone(UTC),
            event_time_max=None if high is None else high.astimezone(UTC),
            examples_seen=counts.learned,
            examples_excluded=counts.excluded,
            excluded_windows=tuple(learner.windows),
            metrics=metrics,
            blob_sha256="",
            created_at=now,
            lineage=lineage,
        )
        state = {
            "metrics": learner.metrics.state(),
            "counts": counts.as_dict(),
            "recent": learner.recent.state(),
        }
        if writer is not None:
            state["writer"] = {"token": writer.token, "host": writer.host, "pid": writer.pid}
        save_state(self.settings.checkpoint_dir, checkpoint_id, state, self._key)
        return self.store.save(manifest, learner.model)

    def discard(self, checkpoint_id: str) -> None:
        """Remove a checkpoint that was written but must not count (its writer lost the
        lease while writing): model, manifest and trainer state."""
        self.store.delete(checkpoint_id)
        path_of(self.settings.checkpoint_dir, checkpoint_id).unlink(missing_ok=True)
        log.warning("discarded checkpoint %s", checkpoint_id)

    def announce(self, manifest: CheckpointManifest, timeout: float = 10.0) -> bool:
        """Publish the manifest on ``checkpoints`` keyed by model name; False if not acked."""
        if self._producer is None:
            return False
        self._producer.produce(
            self.settings.topic("checkpoints"), manifest.to_json(), self.spec.name.encode()
        )
        if self._producer.flush(timeout):
            log.error("checkpoint %s was not announced: broker did not ack", manifest.checkpoint_id)
            return False
        return True

    def served(self) -> frozenset[str]:
        """Every checkpoint id that is or was serving (the pusher records them)."""
        if self._redis is None:
            self._redis = redis_client(self.settings)
        members: set[Any] = self._redis.smembers(self.settings.key("served"))  # type: ignore[assignment]
        return frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    def prune(self, current: str) -> list[str]:
        """Keep the newest K, the current one and every served one; drop the rest."""
        try:
            protect = self.served() | {current}
        except (redis.RedisError, OSError) as exc:
            log.warning("not pruning checkpoints: served set unavailable (%s)", exc)
            return []
        deleted = self.store.prune(self.spec.name, self.spec.training.keep_checkpoints, protect)
        delete_orphans(self.settings.checkpoint_dir, f"{self.spec.name}-")
        return deleted

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None
