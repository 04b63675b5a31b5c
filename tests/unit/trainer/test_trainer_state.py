from __future__ import annotations

from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trainer.state import delete_orphans, load_state, path_of, save_state

KEY = Ed25519PrivateKey.generate()


def test_round_trip(tmp_path: Path) -> None:
    state = {"metrics": {"overall": {"log_loss": [1.5, 3]}}, "counts": {"learned": 3}}
    save_state(tmp_path, "m-1", state, KEY)
    assert load_state(tmp_path, "m-1", KEY) == state


def test_tampered_moved_or_missing_state_is_refused(tmp_path: Path) -> None:
    save_state(tmp_path, "m-1", {"counts": {"learned": 3}}, KEY)
    document = orjson.loads(path_of(tmp_path, "m-1").read_bytes())
    document["state"]["counts"]["learned"] = 4
    path_of(tmp_path, "m-1").write_bytes(orjson.dumps(document))
    assert load_state(tmp_path, "m-1", KEY) is None
    save_state(tmp_path, "m-1", {"counts": {"learned": 3}}, KEY)
    path_of(tmp_path, "m-2").write_bytes(path_of(tmp_path, "m-1").read_bytes())
    assert load_state(tmp_path, "m-2", KEY) is None
    assert load_state(tmp_path, "m-1", Ed25519PrivateKey.generate()) is None
    assert load_state(tmp_path, "nope", KEY) is None
    path_of(tmp_path, "m-3").write_bytes(b"{garbage")
    assert load_state(tmp_path, "m-3", KEY) is None


def test_orphans_of_one_model_are_deleted(tmp_path: Path) -> None:
    for checkpoint_id in ("a-1", "a-2", "b-1"):
        save_state(tmp_path, checkpoint_id, {}, KEY)
    (tmp_path / "a-1.json").write_text("{}")
    assert delete_orphans(tmp_path, "a-") == ["a-2"]
    assert path_of(tmp_path, "a-1").exists()
    assert path_of(tmp_path, "b-1").exists()
