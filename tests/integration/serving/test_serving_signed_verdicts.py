"""Verdicts through a real Redis: the pusher's signed verdict lets serving load a
checkpoint; whatever else a Redis writer puts there routes nothing into a model."""

from __future__ import annotations

from pathlib import Path

import orjson

from loopline.checkpoints import CheckpointStore
from loopline.routing import RoutingStore
from loopline.settings import Settings
from loopline.signing import public_key
from pusher.worker import Pusher
from serving.models import ModelCache
from tests.unit.pusher.pusher_support import manifest
from tests.unit.test_tamper_matrix import Payload


def test_only_the_pushers_signed_verdict_qualifies(settings: Settings, tmp_path: Path) -> None:
    spec = settings.load_spec()
    marker = tmp_path / "marker"
    trainer_store = CheckpointStore.of(settings, signing=True)
    good = trainer_store.save(manifest(spec, "ck-good"), {"weights": 1})
    planted = trainer_store.save(manifest(spec, "ck-planted"), Payload(marker))
    trainer_store.save(manifest(spec, "ck-copied"), Payload(marker))
    pusher = Pusher(settings, spec)
    pusher._record(good, True, (), {}, "champion: nothing was serving")
    pusher._record(planted, False, ("metric: worse than the champion",), {}, "refused")
    routing = RoutingStore(settings)
    stored = routing.verdict("ck-good")
    assert stored is not None and stored["signature"] and stored["manifest_sha256"]

    # What a Redis writer can do without the pusher's key.
    raw = orjson.loads(routing.client.get(settings.key("verdict", "ck-planted")))  # type: ignore[arg-type]
    routing.record_verdict("ck-planted", {**raw, "verdict": "qualified"})
    routing.record_verdict("ck-copied", {**stored, "checkpoint_id": "ck-copied"})

    cache = ModelCache(
        CheckpointStore.of(settings),
        spec.schema_hash,
        routing.verdict,
        public_key(settings, "pusher"),
    )
    assert cache.get("ck-good") is not None
    assert cache.get("ck-planted") is None
    assert cache.get("ck-copied") is None
    assert "verdict signature" in cache.refused["ck-planted"]
    assert "verdict signature" in cache.refused["ck-copied"]
    assert not marker.exists()
    pusher.routing.client.close()
