"""The tamper matrix: every way of forging a checkpoint or a verdict is refused by the
trainer's restore, the pusher's store and serving's model cache, and no payload runs.

Each checkpoint blob in the matrix is (or carries) a pickle whose unpickling creates a
marker file; serving's verdict variants put it behind a genuinely signed checkpoint,
so only the verdict stands between it and ``pickle.loads``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loopline.checkpoints import CheckpointStore, manifest_sha256, sign
from loopline.contracts import CheckpointManifest, Window
from loopline.errors import CheckpointError, ConfigError
from loopline.settings import Settings
from loopline.signing import public_key, sign_verdict
from loopline.signing.keys import development_private_key, encode, private_bytes, public_bytes
from loopline.spec import DEFAULT_SPEC, load_spec
from loopline.windows import ExcludedWindows
from serving.models import ModelCache
from trainer.checkpointer import Checkpointer

SPEC = load_spec(DEFAULT_SPEC)
TRAINER = Ed25519PrivateKey.generate()
PUSHER = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()
T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOLDOUT_KEY = "a holdout key only these tests know"


class Payload:
    """Unpickling it creates ``marker`` (a directory): the proof that a forged blob ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def _settings(directory: Path, **keys: str) -> Settings:
    return Settings.from_env({}, env="production", checkpoint_dir=directory, **keys)


def trainer_settings(directory: Path) -> Settings:
    return _settings(directory, signing_key=encode(private_bytes(TRAINER)), holdout_key=HOLDOUT_KEY)


def pusher_settings(directory: Path) -> Settings:
    return _settings(
        directory,
        trainer_public_key=encode(public_bytes(TRAINER.public_key())),
        pusher_signing_key=encode(private_bytes(PUSHER)),
    )


def serving_settings(directory: Path) -> Settings:
    return _settings(
        directory,
        trainer_public_key=encode(public_bytes(TRAINER.public_key())),
        pusher_public_key=encode(public_bytes(PUSHER.public_key())),
    )


def manifest(checkpoint_id: str, minutes: int = 0) -> CheckpointManifest:
    return CheckpointManifest(
        checkpoint_id=checkpoint_id,
        parent_id=None,
        model_name=SPEC.name,
        spec_version=SPEC.spec_version,
        schema_hash=SPEC.schema_hash,
        offsets={0: 10 + minutes, 1: 4},
        event_time_min=T0,
        event_time_max=T0 + timedelta(minutes=5),
        examples_seen=100 + minutes,
        examples_excluded=0,
        excluded_windows=(),
        metrics={"log_loss": 0.4},
        blob_sha256="",
        created_at=T0 + timedelta(minutes=minutes),
        lineage="L1",
    )


def verdict(
    m: CheckpointManifest, key: Ed25519PrivateKey = PUSHER, outcome: str = "qualified"
) -> dict[str, Any]:
    document = {
        "checkpoint_id": m.checkpoint_id,
        "manifest_sha256": manifest_sha256(m),
        "verdict": outcome,
        "decided_at": (T0 + timedelta(hours=1)).isoformat(),
    }
    return sign_verdict(document, key)


@dataclass
class Case:
    """A checkpoint directory as an attacker left it, the id asked for, and the verdicts
    in Redis (None: each checkpoint gets a pusher-signed qualified verdict on whatever
    manifest is on disk, so only the checkpoint check can refuse it)."""

    directory: Path
    marker: Path
    target: str
    verdicts: dict[str, dict[str, Any]] | None = None


def _write_signed(
    directory: Path, m: CheckpointManifest, blob: bytes, key: Ed25519PrivateKey
) -> CheckpointManifest:
    signed = sign(replace(m, blob_sha256=hashlib.sha256(blob).hexdigest()), key)
    (directory / f"{m.checkpoint_id}.model").write_bytes(blob)
    (directory / f"{m.checkpoint_id}.json").write_bytes(signed.to_json())
    return signed


def genuine(directory: Path, marker: Path) -> CheckpointStore:
    """A store holding ``ck`` (a harmless model) and ``old``, both signed by the trainer."""
    store = CheckpointStore(directory, TRAINER.public_key(), TRAINER)
    store.save(manifest("old", 0), {"weights": [0]})
    store.save(manifest("ck", 10), {"weights": [1, 2]})
    return store


def payload_blob(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def _flip(data: bytes, at: int) -> bytes:
    i = at % len(data)
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


Tamper = Callable[[Path, Path], Case]
CHECKPOINT_VARIANTS: dict[str, Tamper] = {}
VERDICT_VARIANTS: dict[str, Tamper] = {}


def _blob_edit(edit: Callable[[bytes, Path], bytes]) -> Tamper:
    def tamper(d: Path, marker: Path) -> Case:
        genuine(d, marker)
        path = d / "ck.model"
        path.write_bytes(edit(path.read_bytes(), marker))
        return Case(d, marker, "ck")

    return tamper


# -- blobs: flipped bytes, swapped, cut, missing (each lets the payload in if unchecked)
for n in range(16):
    CHECKPOINT_VARIANTS[f"blob byte {n} flipped"] = _blob_edit(
        lambda b, m, n=n: _flip(b, n * 7 if n < 8 else -(n - 7))
    )
CHECKPOINT_VARIANTS["blob replaced by payload"] = _blob_edit(lambda b, m: payload_blob(m))
CHECKPOINT_VARIANTS["payload appended to blob"] = _blob_edit(lambda b, m: b + payload_blob(m))
CHECKPOINT_VARIANTS["payload prepended to blob"] = _blob_edit(lambda b, m: payload_blob(m) + b)
CHECKPOINT_VARIANTS["blob truncated"] = _blob_edit(lambda b, m: b[:-3])
CHECKPOINT_VARIANTS["blob empty"] = _blob_edit(lambda b, m: b"")


def _blob_missing(d: Path, marker: Path) -> Case:
    genuine(d, marker)
    (d / "ck.model").unlink()
    return Case(d, marker, "ck")


CHECKPOINT_VARIANTS["blob missing"] = _blob_missing


# -- manifests: flipped bytes anywhere in the file; the blob is the payload throughout
def _manifest_flip(n: int) -> Tamper:
    def tamper(d: Path, marker: Path) -> Case:
        genuine(d, marker)
        blob = payload_blob(marker)
        (d / "ck.model").write_bytes(blob)
        path = d / "ck.json"
        raw = path.read_bytes()
        # Point the manifest at the payload too, so only the signature stands in the way.
        raw = raw.replace(
            CheckpointManifest.from_json(raw).blob_sha256.encode(),
            hashlib.sha256(blob).hexdigest().encode(),
        )
        path.write_bytes(_flip(raw, n * (len(raw) // 32) + 1))
        return Case(d, marker, "ck")

    return tamper


for n in range(32):
    CHECKPOINT_VARIANTS[f"manifest byte {n}/32 flipped"] = _manifest_flip(n)


# -- manifests edited, the signature kept
def _edited(**changes: Any) -> Tamper:
    def tamper(d: Path, marker: Path) -> Case:
        store = genuine(d, marker)
        signed = store.manifest("ck")
        blob = payload_blob(marker)
        (d / "ck.model").write_bytes(blob)
        changes.setdefault("blob_sha256", hashlib.sha256(blob).hexdigest())
        (d / "ck.json").write_bytes(replace(signed, **changes).to_json())
        return Case(d, marker, "ck")

    return tamper


EDITS: dict[str, dict[str, Any]] = {
    "blob sha256 pointed at the payload": {},
    "examples seen": {"examples_seen": 10**6},
    "examples excluded": {"examples_excluded": 3},
    "offsets": {"offsets": {0: 10**9, 1: 4}},
    "lineage": {"lineage": "L2"},
    "parent": {"parent_id": "old"},
    "model name": {"model_name": "someone_else"},
    "spec version": {"spec_version": SPEC.spec_version + 1},
    "schema hash": {"schema_hash": "0" * 16},
    "metrics": {"metrics": {"log_loss": 0.01}},
    "created at": {"created_at": T0 + timedelta(days=365)},
    "event time range": {"event_time_max": T0 + timedelta(days=2)},
    "excluded windows": {"excluded_windows": (Window(T0, T0 + timedelta(hours=1)),)},
    "checkpoint id": {"checkpoint_id": "ck-fresh"},
}
for name, change in EDITS.items():
    CHECKPOINT_VARIANTS[f"manifest edited, signature kept: {name}"] = _edited(**change)


# -- signatures stripped, wrong, or made with a key that is not the trainer's
def _resigned(signature: Callable[[CheckpointManifest, Path], str]) -> Tamper:
    def tamper(d: Path, marker: Path) -> Case:
        genuine(d, marker)
        blob = payload_blob(marker)
        m = replace(manifest("ck", 10), blob_sha256=hashlib.sha256(blob).hexdigest())
        (d / "ck.model").write_bytes(blob)
        (d / "ck.json").write_bytes(replace(m, signature=signature(m, d)).to_json())
        return Case(d, marker, "ck")

    return tamper


def _old_signature(m: CheckpointManifest, d: Path) -> str:
    return CheckpointManifest.from_json((d / "old.json").read_bytes()).signature


SIGNATURES: dict[str, Callable[[CheckpointManifest, Path], str]] = {
    "stripped": lambda m, d: "",
    "whitespace": lambda m, d: "   ",
    "not base64": lambda m, d: "not a signature!",
    "random bytes": lambda m, d: base64.b64encode(os.urandom(64)).decode(),
    "zeros": lambda m, d: base64.b64encode(bytes(64)).decode(),
    "another checkpoint's": _old_signature,
    "truncated": lambda m, d: sign(m, TRAINER).signature[:40],
    "development trainer key": lambda m, d: sign(m, development_private_key("trainer")).signature,
    "development pusher key": lambda m, d: sign(m, development_private_key("pusher")).signature,
    "the pusher's key": lambda m, d: sign(m, PUSHER).signature,
    "a stranger's key": lambda m, d: sign(m, STRANGER).signature,
    "the old HMAC with the old default key": lambda m, d: hmac.new(
        b"loopline-dev-signing-key", m.to_json(), hashlib.sha256
    ).hexdigest(),
}
for name, signature in SIGNATURES.items():
    CHECKPOINT_VARIANTS[f"payload with signature {name}"] = _resigned(signature)


# -- renamed files and old checkpoints under new ids
def _renamed(sources: dict[str, str], target: str) -> Tamper:
    def tamper(d: Path, marker: Path) -> Case:
        genuine(d, marker)
        for suffix, source in sources.items():
            (d / f"{target}{suffix}").write_bytes((d / f"{source}{suffix}").read_bytes())
        return Case(d, marker, target)

    return tamper


CHECKPOINT_VARIANTS["old checkpoint copied under a fresh id"] = _renamed(
    {".json": "old", ".model": "old"}, "ck-fresh"
)
CHECKPOINT_VARIANTS["ck copied under a fresh id"] = _renamed(
    {".json": "ck", ".model": "ck"}, "ck-fresh"
)
CHECKPOINT_VARIANTS["old checkpoint over ck"] = _renamed({".json": "old", ".model": "old"}, "ck")
CHECKPOINT_VARIANTS["old manifest over ck"] = _renamed({".json": "old"}, "ck")
CHECKPOINT_VARIANTS["old blob over ck"] = _renamed({".model": "old"}, "ck")


def _old_under_new_id_resigned_elsewhere(d: Path, marker: Path) -> Case:
    # An old checkpoint's manifest renamed, its id edited to match: the signature breaks.
    genuine(d, marker)
    old = CheckpointManifest.from_json((d / "old.json").read_bytes())
    (d / "ck-fresh.json").write_bytes(replace(old, checkpoint_id="ck-fresh").to_json())
    (d / "ck-fresh.model").write_bytes((d / "old.model").read_bytes())
    return Case(d, marker, "ck-fresh")


CHECKPOINT_VARIANTS["old checkpoint under a fresh id, id edited"] = (
    _old_under_new_id_resigned_elsewhere
)


def _dev_signed_payload(d: Path, marker: Path) -> Case:
    genuine(d, marker)
    _write_signed(d, manifest("ck", 10), payload_blob(marker), development_private_key("trainer"))
    return Case(d, marker, "ck")


CHECKPOINT_VARIANTS["payload checkpoint signed with the development key"] = _dev_signed_payload


def _stranger_signed_payload(d: Path, marker: Path) -> Case:
    genuine(d, marker)
    _write_signed(d, manifest("ck", 10), payload_blob(marker), STRANGER)
    return Case(d, marker, "ck")


CHECKPOINT_VARIANTS["payload checkpoint signed with a wrong key"] = _stranger_signed_payload


# -- verdicts forged or edited in Redis, before a genuinely signed payload checkpoint
def _verdicts(
    make: Callable[[CheckpointManifest, CheckpointManifest], dict[str, Any] | None],
    target: str = "ck",
) -> Tamper:
    def tamper(d: Path, marker: Path) -> Case:
        store = genuine(d, marker)
        ck = store.save(manifest("ck", 10), Payload(marker))
        fresh = store.save(manifest("ck-refused", 20), Payload(marker))
        old = store.manifest("old")
        made = make(ck, fresh) if target == "ck" else make(fresh, ck)
        return Case(d, marker, target, {} if made is None else {target: made, "old": verdict(old)})

    return tamper


def _edit(v: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**v, **changes}


VERDICTS: dict[str, Callable[[CheckpointManifest, CheckpointManifest], dict[str, Any] | None]] = {
    "none": lambda ck, other: None,
    "unsigned qualified": lambda ck, other: {
        k: v for k, v in verdict(ck).items() if k != "signature"
    },
    "bare qualified flag": lambda ck, other: {
        "checkpoint_id": ck.checkpoint_id,
        "verdict": "qualified",
    },
    "genuine refusal": lambda ck, other: verdict(ck, outcome="refused"),
    "refusal edited to qualified": lambda ck, other: _edit(
        verdict(ck, outcome="refused"), verdict="qualified"
    ),
    "decided_at edited": lambda ck, other: _edit(verdict(ck), decided_at=T0.isoformat()),
    "manifest digest edited": lambda ck, other: _edit(verdict(ck), manifest_sha256="0" * 64),
    "checkpoint id edited": lambda ck, other: _edit(verdict(other), checkpoint_id=ck.checkpoint_id),
    "another checkpoint's verdict copied": lambda ck, other: verdict(other),
    "signed on another manifest": lambda ck, other: sign_verdict(
        {
            "checkpoint_id": ck.checkpoint_id,
            "manifest_sha256": manifest_sha256(other),
            "verdict": "qualified",
            "decided_at": T0.isoformat(),
        },
        PUSHER,
    ),
    "signed with the development pusher key": lambda ck, other: verdict(
        ck, development_private_key("pusher")
    ),
    "signed with the trainer's key": lambda ck, other: verdict(ck, TRAINER),
    "signed with a stranger's key": lambda ck, other: verdict(ck, STRANGER),
    "signature stripped": lambda ck, other: _edit(verdict(ck), signature=""),
    "signature garbage": lambda ck, other: _edit(verdict(ck), signature="%%%"),
    "signature of another verdict": lambda ck, other: _edit(
        verdict(ck), signature=verdict(other)["signature"]
    ),
    "fields of the wrong type": lambda ck, other: _edit(verdict(ck), decided_at=12345),
}
for name, make in VERDICTS.items():
    VERDICT_VARIANTS[f"verdict {name}"] = _verdicts(make)


# -- the components under test -----------------------------------------------------


def refused_by_trainer(case: Case) -> bool:
    checkpointer = Checkpointer(trainer_settings(case.directory), SPEC)
    try:
        restored = checkpointer.load(case.target, ExcludedWindows())
    except CheckpointError:
        return True
    return restored is None


def refused_by_pusher(case: Case) -> bool:
    store = CheckpointStore.of(pusher_settings(case.directory))  # as the pusher builds it
    try:
        store.load(case.target)
    except CheckpointError:
        return True
    return False


def refused_by_serving(case: Case) -> bool:
    settings = serving_settings(case.directory)
    store = CheckpointStore.of(settings)
    verdicts = case.verdicts
    if verdicts is None:  # the strongest case: a pusher-signed verdict on what is on disk
        verdicts = {}
        with contextlib.suppress(CheckpointError):
            verdicts[case.target] = verdict(store.manifest(case.target))
    cache = ModelCache(store, SPEC.schema_hash, verdicts.get, public_key(settings, "pusher"))
    return cache.get(case.target) is None


COMPONENTS = {
    "trainer": refused_by_trainer,
    "pusher": refused_by_pusher,
    "serving": refused_by_serving,
}


def test_the_matrix_has_at_least_a_hundred_variants() -> None:
    assert len(CHECKPOINT_VARIANTS) + len(VERDICT_VARIANTS) >= 100


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_genuine_checkpoints_still_load(tmp_path: Path, component: str) -> None:
    case = Case(tmp_path, tmp_path / "marker", "ck")
    genuine(tmp_path, case.marker)
    assert not COMPONENTS[component](case)


def test_the_payload_runs_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    pickle.loads(payload_blob(marker))
    assert marker.exists()


@pytest.mark.parametrize("component", sorted(COMPONENTS))
@pytest.mark.parametrize("variant", sorted(CHECKPOINT_VARIANTS))
def test_tampered_checkpoints_are_refused(tmp_path: Path, variant: str, component: str) -> None:
    case = CHECKPOINT_VARIANTS[variant](tmp_path, tmp_path / "marker")
    assert COMPONENTS[component](case), f"{component} accepted: {variant}"
    assert not case.marker.exists(), f"{component} ran the payload: {variant}"


@pytest.mark.parametrize("variant", sorted(VERDICT_VARIANTS))
def test_forged_verdicts_are_refused_by_serving(tmp_path: Path, variant: str) -> None:
    case = VERDICT_VARIANTS[variant](tmp_path, tmp_path / "marker")
    assert refused_by_serving(case), f"serving accepted: {variant}"
    assert not case.marker.exists(), f"serving ran the payload: {variant}"


def test_a_genuine_verdict_lets_the_checkpoint_serve(tmp_path: Path) -> None:
    case = _verdicts(lambda ck, other: verdict(ck))(tmp_path, tmp_path / "marker")
    assert not refused_by_serving(case)
    assert case.marker.exists()  # it was the genuine, trainer-signed payload: it loaded


def test_development_keys_are_refused_outside_development_mode(tmp_path: Path) -> None:
    dev = encode(public_bytes(development_private_key("trainer").public_key()))
    with pytest.raises(ConfigError, match="LOOPLINE_TRAINER_PUBLIC_KEY holds the well-known"):
        CheckpointStore.of(_settings(tmp_path, trainer_public_key=dev))
    with pytest.raises(ConfigError, match="LOOPLINE_TRAINER_PUBLIC_KEY is not set"):
        CheckpointStore.of(_settings(tmp_path))
    assert CheckpointStore.of(_settings(tmp_path, trainer_public_key=dev).replace(env="dev"))
