"""No Docker engine runs in CI, so the compose file is checked against the CLI here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
import yaml

from loopline.cli import app
from loopline.settings import Settings

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
WORKERS = {"streams", "trainer", "pusher", "serving"}


def _loopline_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in COMPOSE["services"].items()
        if svc.get("image") == "loopline:latest"
    }


def _rest(ctx: Any) -> list[str]:
    # click keeps the subcommand and its arguments apart from the group's own args.
    return [*getattr(ctx, "_protected_args", []), *getattr(ctx, "protected_args", []), *ctx.args]


def _parse(argv: list[str]) -> Any:
    """Resolve and parse a command line the way `loopline` would, without running it."""
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("loopline", list(argv))
    while hasattr(command, "resolve_command") and _rest(ctx):
        name, command, rest = command.resolve_command(ctx, _rest(ctx))
        ctx = command.make_context(name, rest, parent=ctx)
    assert not _rest(ctx), f"unparsed arguments {_rest(ctx)}"
    return ctx


def test_one_service_per_worker() -> None:
    commands = {tuple(svc["command"]) for svc in _loopline_services().values()}
    assert {("run", w) for w in WORKERS} <= commands
    assert {"kafka", "redis", "prometheus"} <= set(COMPOSE["services"])


@pytest.mark.parametrize("name", sorted(_loopline_services()))
def test_service_command_is_a_valid_cli_call(name: str) -> None:
    ctx = _parse(_loopline_services()[name]["command"])
    assert ctx.command.name in {"run", "create"}


def test_a_bad_command_would_be_caught() -> None:
    with pytest.raises(typer.BadParameter, match="trainr"):
        _parse(["run", "trainr"])


@pytest.mark.parametrize("name", sorted(_loopline_services()))
def test_service_environment_is_valid_settings(name: str) -> None:
    env = {
        k: re.sub(r"\$\{[^}]+\}", "x", str(v))
        for k, v in _loopline_services()[name]["environment"].items()
    }
    settings = Settings.from_env(env)
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.redis_url == "redis://redis:6379/0"


def test_redis_persists_with_aof_and_kafka_runs_kraft() -> None:
    assert "--appendonly" in COMPOSE["services"]["redis"]["command"]
    kafka_env = COMPOSE["services"]["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_mounted_files_exist() -> None:
    for svc in COMPOSE["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("loopline", "streams", "trainer", "pusher", "serving", "ops", "feature_repo"):
        assert f"COPY {package} {package}" in dockerfile
