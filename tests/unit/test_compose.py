"""No Docker engine runs in CI, so the compose file is checked against the CLI here."""

from __future__ import annotations

import posixpath
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
PROMETHEUS = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
GRAFANA = ROOT / "ops" / "grafana"
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
    assert {"kafka", "redis", "prometheus", "grafana", "kafka-exporter"} <= set(COMPOSE["services"])


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


# -- monitoring ------------------------------------------------------------------------


def _mounts(service: str) -> dict[str, str]:
    """A service's bind mounts: path in the container -> path in the repository."""
    mounts = {}
    for volume in COMPOSE["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def _scrape_targets() -> list[tuple[str, str, int]]:
    """(job, host, port) of every scrape target, static or found by DNS."""
    targets = []
    for job in PROMETHEUS["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append((job["job_name"], host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            assert dns["type"] == "A", "compose's DNS answers A records"
            targets += [(job["job_name"], name, int(dns["port"])) for name in dns["names"]]
    return targets


def _metrics_port(service: dict[str, Any]) -> int:
    """Where a worker serves /metrics: serving on its HTTP port, the others on their own."""
    env = service["environment"]
    if service["command"] == ["run", "serving"]:
        return int(env["LOOPLINE_SERVING_PORT"])
    return int(env["LOOPLINE_METRICS_PORT"])


def test_every_worker_is_scraped_on_the_port_it_serves_metrics_on() -> None:
    scraped = {host: port for _, host, port in _scrape_targets()}
    workers = {n: s for n, s in _loopline_services().items() if s["command"][0] == "run"}
    assert set(workers) == WORKERS
    for name, service in workers.items():
        assert scraped.get(name) == _metrics_port(service), name


def test_every_scrape_target_is_a_service_exposing_that_port() -> None:
    for job, host, port in _scrape_targets():
        service = COMPOSE["services"].get(host)
        assert service is not None, f"{job} scrapes {host}, which is no compose service"
        assert str(port) in [str(p) for p in service.get("expose", [])], (job, host, port)


def test_prometheus_loads_the_mounted_config_and_alert_rules() -> None:
    service = COMPOSE["services"]["prometheus"]
    mounts = _mounts("prometheus")
    flags = dict(arg.split("=", 1) for arg in service["command"] if "=" in arg)
    config = flags["--config.file"]
    assert mounts[config] == "./ops/prometheus/prometheus.yml"
    rule_files = [posixpath.join(posixpath.dirname(config), f) for f in PROMETHEUS["rule_files"]]
    assert [mounts.get(f) for f in rule_files] == ["./ops/prometheus/alerts.yml"]


def test_grafana_provisions_prometheus_and_the_dashboards() -> None:
    service = COMPOSE["services"]["grafana"]
    mounts = _mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == "./ops/grafana/provisioning"
    provisioning = GRAFANA / "provisioning"
    provider = yaml.safe_load((provisioning / "dashboards" / "loopline.yml").read_text())
    dashboards = provider["providers"][0]["options"]["path"]
    assert mounts[dashboards] == "./ops/grafana/dashboards"
    home = service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / posixpath.relpath(home, dashboards)).is_file()
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    url = source["datasources"][0]["url"]
    found = re.fullmatch(r"http://prometheus:(\d+)", url)
    assert found is not None, url
    port = found.group(1)
    assert f"{port}:{port}" in COMPOSE["services"]["prometheus"]["ports"]
