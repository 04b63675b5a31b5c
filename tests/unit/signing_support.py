"""Key files and production settings for the signing tests."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from loopline.cli import app
from loopline.settings import Settings


def keys(tmp_path: Path) -> Path:
    result = CliRunner().invoke(app, ["keys", "new", "--out", str(tmp_path / "keys")])
    assert result.exit_code == 0, result.output
    return tmp_path / "keys"


def production(tmp_path: Path, **values: str) -> Settings:
    found = keys(tmp_path)
    return Settings.from_env(
        {},
        signing_key=str(found / "trainer.key"),
        trainer_public_key=str(found / "trainer.pub"),
        pusher_signing_key=str(found / "pusher.key"),
        pusher_public_key=str(found / "pusher.pub"),
        holdout_key=str(found / "holdout.key"),
        operator_keys=str(found / "operators"),
        **values,
    )
