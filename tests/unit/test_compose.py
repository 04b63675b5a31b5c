"""No Docker engine runs in CI, so the compose file is checked against the CLI here."""

from __future__ import annotations

import fnmatch
import posixpath
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import typer.main
import yaml

from loopline.cli import app
from loopline.heartbeat import worker_key
from loopline.kafka_acls import ROLES, allowed, grants
from loopline.settings import Settings
from loopline.signing.commands import MONITOR, write_operator_pair
from loopline.signing.guard import Worker, require_safe
from loopline.signing.keys import write_key_pair

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
    assert ctx.command.name in {"run", "create", "acls", "status"}


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
    url = urlsplit(settings.redis_url)
    assert (url.hostname, url.port, url.path, url.password) == ("redis", 6379, "/0", "x")
    assert url.username == ("serving" if name == "serving" else "")


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
    """Where a worker serves /metrics: every one on its metrics port (serving's public
    port answers /metrics only to the token)."""
    return int(service["environment"]["LOOPLINE_METRICS_PORT"])


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
    assert f"127.0.0.1:{port}:{port}" in COMPOSE["services"]["prometheus"]["ports"]


# -- hardening ---------------------------------------------------------------------------

REQUIRED = re.compile(r"\$\{(?P<name>[A-Z_]+):\?[^}]+\}")


def _required(value: str) -> str:
    """The environment variable ``value`` must come from, which compose requires."""
    found = REQUIRED.fullmatch(value)
    assert found is not None, f"{value!r} is not a required ${{VAR:?...}}"
    return found.group("name")


def _redis_command() -> list[str]:
    return [str(arg) for arg in COMPOSE["services"]["redis"]["command"]]


def _redis_user(name: str) -> list[str]:
    """The rules of an ACL user declared with ``--user name ...`` on redis-server's line."""
    command = _redis_command()
    at = [i for i, arg in enumerate(command) if arg == "--user" and command[i + 1] == name]
    assert len(at) == 1, f"no --user {name} in {command}"
    rules = command[at[0] + 2 :]
    end = next((i for i, arg in enumerate(rules) if arg.startswith("--")), len(rules))
    return rules[:end]


def test_secrets_come_from_the_environment_and_are_required() -> None:
    serving = COMPOSE["services"]["serving"]["environment"]
    assert _required(serving["LOOPLINE_SERVING_TOKEN"]) == "LOOPLINE_SERVING_TOKEN"
    grafana = COMPOSE["services"]["grafana"]["environment"]
    assert _required(grafana["GF_SECURITY_ADMIN_PASSWORD"]) == "GF_ADMIN_PASSWORD"
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    for name, service in _loopline_services().items():
        env = service["environment"]
        for key in ("LOOPLINE_TRAINER_PUBLIC_KEY", "LOOPLINE_PUSHER_PUBLIC_KEY"):
            assert _required(env[key]) == key, name


def test_each_private_key_reaches_only_the_worker_that_signs() -> None:
    holders = {
        key: sorted(n for n, s in _loopline_services().items() if key in s["environment"])
        for key in (
            "LOOPLINE_SIGNING_KEY",
            "LOOPLINE_PUSHER_SIGNING_KEY",
            "LOOPLINE_HOLDOUT_KEY",
            "LOOPLINE_OPERATOR_KEY",
            "LOOPLINE_OPERATOR_KEYS",
        )
    }
    assert holders == {
        "LOOPLINE_SIGNING_KEY": ["trainer"],
        "LOOPLINE_PUSHER_SIGNING_KEY": ["pusher"],
        "LOOPLINE_HOLDOUT_KEY": ["pusher", "trainer"],
        "LOOPLINE_OPERATOR_KEY": ["streams"],
        "LOOPLINE_OPERATOR_KEYS": ["pusher", "trainer"],
    }


@pytest.mark.parametrize("worker", ["streams", "trainer", "pusher", "serving"])
def test_every_worker_would_start_in_production_with_real_keys(
    worker: Worker, tmp_path: Path
) -> None:
    """Compose's environment, with fresh keys and passwords filled in, passes the checks a
    worker makes before it starts outside development mode."""
    keys = {signer: write_key_pair(tmp_path, signer) for signer in ("trainer", "pusher")}
    monitor = write_operator_pair(tmp_path, MONITOR)
    values = {
        "LOOPLINE_STREAMS_OPERATOR_KEY": f"{MONITOR}={monitor.private.read_text().strip()}",
        "LOOPLINE_OPERATOR_KEYS": f"{MONITOR}={monitor.public.read_text().strip()}",
        "LOOPLINE_SIGNING_KEY": str(keys["trainer"].private),
        "LOOPLINE_PUSHER_SIGNING_KEY": str(keys["pusher"].private),
        "LOOPLINE_TRAINER_PUBLIC_KEY": str(keys["trainer"].public),
        "LOOPLINE_PUSHER_PUBLIC_KEY": str(keys["pusher"].public),
        "LOOPLINE_HOLDOUT_KEY": "a holdout key of forty-odd characters here",
    }

    def fill(value: object) -> str:
        return re.sub(
            r"\$\{([A-Z_]+)[^}]*\}", lambda m: values.get(m.group(1), "s3cret"), str(value)
        )

    env = {k: fill(v) for k, v in _loopline_services()[worker]["environment"].items()}
    require_safe(Settings.from_env(env), worker)


def test_redis_requires_a_password_and_every_worker_sends_one() -> None:
    command = _redis_command()
    password = _required(command[command.index("--requirepass") + 1])
    assert password == "LOOPLINE_REDIS_PASSWORD"
    assert "${" + password in COMPOSE["services"]["redis"]["environment"]["REDISCLI_AUTH"]
    serving_password = _required(_redis_user("serving")[1][1:])
    for name, service in _loopline_services().items():
        url = service["environment"]["LOOPLINE_REDIS_URL"]
        found = re.fullmatch(r"redis://(\w*):(\$\{[^}]+\})@redis:6379/0", url)
        assert found is not None, (name, url)
        wanted = serving_password if name == "serving" else password
        assert _required(found.group(2)) == wanted, name


def test_serving_redis_user_reads_and_writes_only_its_heartbeat() -> None:
    rules = _redis_user("serving")
    assert rules[0] == "on" and rules[1].startswith(">")
    assert "resetkeys" in rules and "-@all" in rules
    assert not {"~*", "allkeys", "+@all", "allcommands", "+@write", "nopass"} & set(rules)
    assert "%R~*" in rules
    writable = [r[len("%W~") :] for r in rules if r.startswith("%W~")]
    granted = {r[1:] for r in rules if r.startswith("+")}
    assert granted == {"@read", "@connection", "set"}
    env = {
        k: re.sub(r"\$\{[^}]+\}", "x", str(v))
        for k, v in COMPOSE["services"]["serving"]["environment"].items()
    }
    settings = Settings.from_env(env)

    def may_write(key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in writable)

    assert may_write(worker_key(settings, f"serving.host-{settings.serving_port}"))
    for key in ("routing", "kill_switch", "ramp", "pin", "verdict:ck-1", "worker:pusher"):
        assert not may_write(settings.key(key)), key


def test_checkpoints_are_mounted_read_write_only_where_written() -> None:
    mounted = {}
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source, target, *mode = volume.split(":")
            if source == "checkpoints":
                assert target == service["environment"]["LOOPLINE_CHECKPOINT_DIR"]
                mounted[name] = mode
    assert mounted == {"trainer": [], "pusher": ["ro"], "serving": ["ro"], "operator": ["ro"]}


def test_ports_are_published_on_loopback_except_serving() -> None:
    published = {}
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            published[name] = str(port)
            if name != "serving":
                assert str(port).startswith("127.0.0.1:"), (name, port)
    assert published["serving"] == "8080:8080"
    # Kafka and Redis only inside the compose network.
    assert not {"kafka", "redis", "kafka-exporter"} & set(published)


# -- Kafka: SASL/SCRAM and ACLs ----------------------------------------------------------

KAFKA = COMPOSE["services"]["kafka"]
KAFKA_ENV = {k: str(v) for k, v in KAFKA["environment"].items()}
#: the principal each Loopline service logs in as
LOGINS = {
    "topics": "admin",
    "acls": "admin",
    "streams": "streams",
    "trainer": "trainer",
    "pusher": "pusher",
    "serving": "serving",
    "operator": "operator",
}


def _listeners(value: str) -> dict[str, str]:
    """``NAME://host:port,...`` as {name: host:port}."""
    return dict(item.split("://", 1) for item in value.split(","))


def _scram_users() -> list[str]:
    """The users ops/kafka/start writes SCRAM credentials for."""
    script = (ROOT / "ops" / "kafka" / "start").read_text()
    found = re.search(r"for user in ([a-z ]+); do", script)
    assert found is not None, "ops/kafka/start names no users"
    return found.group(1).split()


def test_kafka_requires_a_scram_login_and_authorizes_every_request() -> None:
    protocols = dict(
        p.split(":") for p in KAFKA_ENV["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    listeners = _listeners(KAFKA_ENV["KAFKA_LISTENERS"])
    controller = KAFKA_ENV["KAFKA_CONTROLLER_LISTENER_NAMES"]
    for name, address in listeners.items():
        if name == controller:  # PLAINTEXT, so only on the container's loopback
            assert address.rsplit(":", 1)[0] == "localhost", address
        else:
            assert protocols[name] == "SASL_PLAINTEXT", name
    advertised = _listeners(KAFKA_ENV["KAFKA_ADVERTISED_LISTENERS"])
    assert {protocols[n] for n in advertised} == {"SASL_PLAINTEXT"}
    assert KAFKA_ENV["KAFKA_CONTROLLER_QUORUM_VOTERS"].endswith("@localhost:9093")
    assert protocols[KAFKA_ENV["KAFKA_INTER_BROKER_LISTENER_NAME"]] == "SASL_PLAINTEXT"
    assert KAFKA_ENV["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert KAFKA_ENV["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert KAFKA_ENV["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert set(KAFKA_ENV["KAFKA_SUPER_USERS"].split(";")) == {"User:admin", "User:ANONYMOUS"}
    # The data lives on the volume (the image's default log dir is under /tmp).
    assert f"kafka:{KAFKA_ENV['KAFKA_LOG_DIRS']}" in KAFKA["volumes"]
    # Its own healthcheck logs in too.
    assert "--command-config /tmp/loopline/admin.properties" in " ".join(
        KAFKA["healthcheck"]["test"]
    )


def test_the_broker_starts_through_the_script_that_writes_every_scram_user() -> None:
    assert KAFKA["entrypoint"] == ["bash", "/opt/loopline/kafka-start"]
    assert "./ops/kafka/start:/opt/loopline/kafka-start:ro" in KAFKA["volumes"]
    assert _scram_users() == ["admin", *ROLES]
    for user in _scram_users():
        key = f"LOOPLINE_KAFKA_{user.upper()}_PASSWORD"
        assert _required(KAFKA_ENV[key]) == key


def test_each_service_logs_in_as_its_own_principal_with_a_required_password() -> None:
    services = _loopline_services()
    assert set(services) == set(LOGINS)
    for name, service in services.items():
        env = service["environment"]
        assert env["LOOPLINE_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", name
        assert env["LOOPLINE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        user = env["LOOPLINE_KAFKA_USERNAME"]
        assert user == LOGINS[name], name
        assert user in _scram_users()
        # The password the broker was given for that user, and no other.
        assert (
            _required(env["LOOPLINE_KAFKA_PASSWORD"]) == f"LOOPLINE_KAFKA_{user.upper()}_PASSWORD"
        )


def test_the_exporter_logs_in_as_the_principal_that_may_only_describe() -> None:
    flags = dict(
        arg.split("=", 1) if "=" in arg else (arg, "")
        for arg in COMPOSE["services"]["kafka-exporter"]["command"]
    )
    assert "--sasl.enabled" in flags and flags["--sasl.mechanism"] == "scram-sha512"
    assert flags["--sasl.username"] == "exporter"
    assert _required(flags["--sasl.password"]) == "LOOPLINE_KAFKA_EXPORTER_PASSWORD"
    exporter = [g for g in grants(_service_settings("streams")) if g.principal == "User:exporter"]
    assert exporter and {g.operation for g in exporter} == {"DESCRIBE"}


def _service_settings(name: str) -> Settings:
    env = {
        k: re.sub(r"\$\{[^}]+\}", "x", str(v))
        for k, v in _loopline_services()[name]["environment"].items()
    }
    return Settings.from_env(env)


def test_only_the_operator_and_streams_may_write_control_in_compose() -> None:
    settings = _service_settings("operator")
    found = grants(settings)
    control = settings.topic("control")
    writers = {
        user for user in _scram_users() if allowed(found, f"User:{user}", "topic", control, "WRITE")
    }
    # admin is the broker's super user (topics and ACLs), allowed without a grant.
    assert writers == {"operator", "streams"}
