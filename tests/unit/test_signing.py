"""Keys, signed verdicts and what a worker refuses to start with outside development."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopline.checkpoints import CheckpointStore
from loopline.cli import app
from loopline.errors import ConfigError
from loopline.settings import Settings
from loopline.signing import private_key, public_key, require_safe
from loopline.signing.guard import refusals
from loopline.signing.keys import development_private_key, encode, public_bytes
from tests.start_up import run_worker
from tests.unit.signing_support import keys as _keys
from tests.unit.signing_support import production as _production


def test_keys_new_writes_every_key_with_secret_private_halves(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    assert sorted(str(p.relative_to(keys)) for p in keys.rglob("*.*")) == [
        "holdout.key",
        "operators/streams.health.pub",
        "pusher.key",
        "pusher.pub",
        "streams.health.key",
        "trainer.key",
        "trainer.pub",
    ]
    for secret in ("trainer.key", "pusher.key", "holdout.key", "streams.health.key"):
        assert (keys / secret).stat().st_mode & 0o077 == 0, secret
    again = CliRunner().invoke(app, ["keys", "new", "--out", str(keys)])
    assert again.exit_code != 0  # never overwrites a key by accident


def test_keys_new_operator_writes_only_that_operators_pair(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    args = ["keys", "new", "--out", str(out), "--operator", "alice", "--operator", "bob"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.*")) == [
        "alice.key",
        "bob.key",
        "operators/alice.pub",
        "operators/bob.pub",
    ]
    assert (out / "alice.key").stat().st_mode & 0o077 == 0
    bad = CliRunner().invoke(app, ["keys", "new", "--out", str(out), "--operator", "a b"])
    assert bad.exit_code != 0


def test_key_files_and_inline_keys_are_the_same_key(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    by_path = Settings.from_env({}, signing_key=str(keys / "trainer.key"))
    inline = Settings.from_env({}, trainer_public_key=(keys / "trainer.pub").read_text())
    derived = private_key(by_path, "trainer").public_key()
    assert public_bytes(derived) == public_bytes(public_key(inline, "trainer"))


def test_a_bad_key_names_its_setting() -> None:
    with pytest.raises(ConfigError, match="LOOPLINE_PUSHER_PUBLIC_KEY: not an Ed25519 key"):
        public_key(Settings.from_env({}, pusher_public_key="s3cret"), "pusher")


def test_every_worker_starts_with_its_own_keys(tmp_path: Path) -> None:
    settings = _production(tmp_path)
    monitor = str(tmp_path / "keys" / "streams.health.key")
    require_safe(settings.replace(pusher_signing_key=None), "trainer")
    require_safe(settings.replace(signing_key=None), "pusher")
    require_safe(settings.replace(signing_key=None, pusher_signing_key=None), "serving")
    streams = settings.replace(signing_key=None, pusher_signing_key=None, operator_key=monitor)
    require_safe(streams, "streams")


def test_a_private_key_held_by_another_worker_is_refused(tmp_path: Path) -> None:
    found = refusals(_production(tmp_path), "serving")
    assert any("LOOPLINE_SIGNING_KEY is set for serving" in f for f in found)
    assert any("LOOPLINE_PUSHER_SIGNING_KEY is set for serving" in f for f in found)


@pytest.mark.parametrize("worker", ["trainer", "pusher", "serving"])
def test_no_key_refuses_outside_development_and_is_fine_in_it(worker: str) -> None:
    with pytest.raises(ConfigError, match=r"LOOPLINE_ENV=dev.*is not set|is not set.*ENV=dev"):
        require_safe(Settings.from_env({}), worker)  # type: ignore[arg-type]
    require_safe(Settings.from_env({"LOOPLINE_ENV": "dev"}), worker)  # type: ignore[arg-type]


def test_the_development_key_refuses_outside_development() -> None:
    dev = encode(public_bytes(development_private_key("pusher").public_key()))
    settings = Settings.from_env({"LOOPLINE_PUSHER_PUBLIC_KEY": dev})
    with pytest.raises(ConfigError, match="LOOPLINE_PUSHER_PUBLIC_KEY holds the well-known"):
        public_key(settings, "pusher")
    assert public_key(settings.replace(env="dev"), "pusher")


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("redis://10.0.0.5:6379/0", True),
        ("redis://redis:6379/0", True),
        ("redis://user@redis:6379/0", True),
        ("redis://:pw@redis:6379/0", False),
        ("rediss://serving:pw@redis.internal:6380/0", False),
        ("redis://127.0.0.1:6379/0", False),
        ("redis://localhost:6379/0", False),
        ("redis://[::1]:6379/0", False),
        ("unix:///run/redis.sock", False),
    ],
)
def test_redis_off_loopback_needs_a_password(tmp_path: Path, url: str, refused: bool) -> None:
    settings = _production(tmp_path, redis_url=url).replace(pusher_signing_key=None)
    found = refusals(settings, "trainer")
    assert any("LOOPLINE_REDIS_URL" in f for f in found) == refused, found


@pytest.mark.parametrize(
    ("host", "token", "refused"),
    [
        ("0.0.0.0", None, True),
        ("10.1.2.3", None, True),
        ("::", None, True),
        ("0.0.0.0", "t0ken", False),
        ("127.0.0.1", None, False),
        ("localhost", None, False),
    ],
)
def test_serving_off_loopback_needs_a_token(
    tmp_path: Path, host: str, token: str | None, refused: bool
) -> None:
    settings = _production(tmp_path, serving_host=host).replace(
        signing_key=None, pusher_signing_key=None
    )
    if token is not None:
        settings = Settings.from_env(settings.to_env() | {"LOOPLINE_SERVING_TOKEN": token})
    found = refusals(settings, "serving")
    assert any("LOOPLINE_SERVING_TOKEN" in f for f in found) == refused, found


def test_checkpoint_store_of_development_settings_signs_and_verifies(tmp_path: Path) -> None:
    settings = Settings.from_env({"LOOPLINE_ENV": "dev"}, checkpoint_dir=tmp_path)
    assert CheckpointStore.of(settings, signing=True)._private is not None


def test_serving_started_with_defaults_refuses_and_names_the_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env |= {"LOOPLINE_SERVING_HOST": "0.0.0.0", "LOOPLINE_STATE_DIR": str(tmp_path)}
    returncode, said = run_worker("serving", env)
    assert returncode != 0
    assert "refuses to start outside development mode" in said, said
    for setting in (
        "LOOPLINE_ENV=dev",
        "LOOPLINE_TRAINER_PUBLIC_KEY",
        "LOOPLINE_PUSHER_PUBLIC_KEY",
        "LOOPLINE_SERVING_TOKEN",
    ):
        assert setting in said, setting
