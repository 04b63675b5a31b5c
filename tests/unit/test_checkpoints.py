from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loopline.checkpoints import CheckpointStore, sign, signature_valid
from loopline.contracts import CheckpointManifest
from loopline.errors import CheckpointError

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def manifest(checkpoint_id: str, minutes: int = 0) -> CheckpointManifest:
    return CheckpointManifest(
        checkpoint_id=checkpoint_id,
        parent_id=None,
        model_name="m",
        spec_version=1,
        schema_hash="h",
        offsets={0: 10},
        event_time_min=None,
        event_time_max=None,
        examples_seen=minutes,
        examples_excluded=0,
        excluded_windows=(),
        metrics={"log_loss": 0.5},
        blob_sha256="",
        created_at=T0 + timedelta(minutes=minutes),
        lineage="L1",
    )


def test_save_then_load_verifies(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, KEY.public_key(), KEY)
    saved = store.save(manifest("c1"), {"weights": [1, 2]})
    assert signature_valid(saved, KEY.public_key())
    loaded, model = store.load("c1")
    assert loaded == saved
    assert model == {"weights": [1, 2]}


def test_signature_covers_every_field() -> None:
    signed = sign(manifest("c1"), KEY)
    assert not signature_valid(replace(signed, offsets={0: 11}), KEY.public_key())
    assert not signature_valid(signed, OTHER.public_key())
    assert not signature_valid(replace(signed, signature=""), KEY.public_key())


def test_corrupt_and_tampered_checkpoints_are_refused_and_skipped(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, KEY.public_key(), KEY)
    store.save(manifest("old", 0), "old-model")
    store.save(manifest("corrupt", 1), "x")
    store.save(manifest("tampered", 2), "y")
    (tmp_path / "corrupt.model").write_bytes(b"garbage")
    tampered = store.manifest("tampered")
    (tmp_path / "tampered.json").write_bytes(replace(tampered, examples_seen=99).to_json())
    with pytest.raises(CheckpointError, match="sha256"):
        store.load("corrupt")
    with pytest.raises(CheckpointError, match="signature"):
        store.load("tampered")
    latest = store.latest("m")
    assert latest is not None
    assert latest[0].checkpoint_id == "old"


def test_prune_keeps_newest_and_protected(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, KEY.public_key(), KEY)
    for i in range(5):
        store.save(manifest(f"c{i}", i), i)
    assert sorted(store.prune("m", keep=2, protect=frozenset({"c0"}))) == ["c1", "c2"]
    assert [m.checkpoint_id for m in store.manifests()] == ["c4", "c3", "c0"]


def test_bad_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="invalid checkpoint id"):
        CheckpointStore(tmp_path, KEY.public_key(), KEY).load("../etc/passwd")


def test_signature_survives_the_wire_whatever_the_number_and_offset_types(tmp_path: Path) -> None:
    from datetime import timezone

    paris = timezone(timedelta(hours=1))
    loose = replace(
        manifest("c1"), metrics={"log_loss": 1}, created_at=datetime(2026, 1, 1, 1, tzinfo=paris)
    )
    store = CheckpointStore(tmp_path, KEY.public_key(), KEY)
    store.save(loose, "model")
    loaded, _ = store.load("c1")
    assert loaded.metrics == {"log_loss": 1.0}
    assert loaded.created_at == T0


def test_a_store_that_only_verifies_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="only verifies"):
        CheckpointStore(tmp_path, KEY.public_key()).save(manifest("c1"), "model")
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_copied_under_another_id_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, KEY.public_key(), KEY)
    store.save(manifest("a"), "model")
    for suffix in (".json", ".model"):
        (tmp_path / f"b{suffix}").write_bytes((tmp_path / f"a{suffix}").read_bytes())
    with pytest.raises(CheckpointError, match="signed as a"):
        store.load("b")
