"""How every Kafka client logs in, and the refusal of an unauthenticated broker off loopback."""

from __future__ import annotations

import ast
import datetime as dt
import os
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from loopline.errors import ConfigError
from loopline.kafka import consumer_config, producer_config
from loopline.kafka_auth import aiokafka_config, confluent_config, login
from loopline.settings import Settings
from loopline.signing.guard import refusals, require_safe
from streams.topology import broker_credentials
from tests.start_up import run_worker

ROOT = Path(__file__).parents[2]
PASSWORD = "pa55-w0rd-not-in-logs"


def _sasl(protocol: str = "SASL_PLAINTEXT", **values: str) -> Settings:
    env = {
        "LOOPLINE_KAFKA_BOOTSTRAP": "kafka:9092",
        "LOOPLINE_KAFKA_SECURITY_PROTOCOL": protocol,
        "LOOPLINE_KAFKA_USERNAME": "trainer",
        "LOOPLINE_KAFKA_PASSWORD": PASSWORD,
    }
    return Settings.from_env(env | values)


def _ca_file(tmp_path: Path) -> Path:
    """A self-signed CA certificate, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loopline-test-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


# -- the mapping -------------------------------------------------------------------------


def test_without_settings_every_client_speaks_plaintext() -> None:
    settings = Settings.from_env({})
    assert confluent_config(settings) == {"security.protocol": "PLAINTEXT"}
    assert aiokafka_config(settings) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(settings) is None
    assert not {k for k in producer_config(settings) if k.startswith("sasl.")}


def test_sasl_reaches_producers_consumers_and_admin_clients() -> None:
    settings = _sasl()
    wanted = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "trainer",
        "sasl.password": PASSWORD,
    }
    assert confluent_config(settings) == wanted
    for config in (producer_config(settings), consumer_config(settings, "g")):
        assert {k: config[k] for k in wanted} == wanted
        assert config["bootstrap.servers"] == "kafka:9092"


def test_aiokafka_and_faust_get_the_same_login() -> None:
    for settings in (_sasl(), _sasl(LOOPLINE_KAFKA_SASL_MECHANISM="SCRAM-SHA-256")):
        direct = aiokafka_config(settings)
        assert direct == {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": "trainer",
            "sasl_plain_password": PASSWORD,
            "ssl_context": None,
        }
        # What faust itself hands its aiokafka clients from the app's broker_credentials.
        assert credentials_to_aiokafka_auth(broker_credentials(settings)) == direct


def test_sasl_ssl_checks_the_broker_against_the_ca_file(tmp_path: Path) -> None:
    ca = _ca_file(tmp_path)
    settings = _sasl("SASL_SSL", LOOPLINE_KAFKA_SSL_CA_FILE=str(ca))
    assert confluent_config(settings)["ssl.ca.location"] == str(ca)
    assert confluent_config(settings)["security.protocol"] == "SASL_SSL"
    for auth in (
        aiokafka_config(settings),
        credentials_to_aiokafka_auth(broker_credentials(settings)),
    ):
        assert auth["security_protocol"] == "SASL_SSL"
        context: ssl.SSLContext = auth["ssl_context"]
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        subjects = [dict(x[0] for x in c["subject"]) for c in context.get_ca_certs()]
        assert {"commonName": "loopline-test-ca"} in subjects


def test_sasl_ssl_without_a_ca_file_trusts_the_system_cas() -> None:
    settings = _sasl("SASL_SSL")
    assert "ssl.ca.location" not in confluent_config(settings)
    context = aiokafka_config(settings)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_an_unreadable_ca_file_names_its_setting(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="LOOPLINE_KAFKA_SSL_CA_FILE"):
        aiokafka_config(_sasl("SASL_SSL", LOOPLINE_KAFKA_SSL_CA_FILE=str(bad)))


# -- the password ------------------------------------------------------------------------


def test_the_password_file_is_read_without_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "kafka-password"
    path.write_text(PASSWORD + "\n")
    env = {"LOOPLINE_KAFKA_PASSWORD_FILE": str(path)}
    settings = Settings.from_env(
        {k: v for k, v in _sasl().to_env().items() if k != "LOOPLINE_KAFKA_PASSWORD"} | env
    )
    assert confluent_config(settings)["sasl.password"] == PASSWORD
    # A child process gets the file's path, never its content.
    assert PASSWORD not in "".join(settings.to_env().values())
    assert settings.to_env()["LOOPLINE_KAFKA_PASSWORD_FILE"] == str(path)


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_password_file_names_its_setting(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "kafka-password"
    if content is not None:
        path.write_text(content)
    env = {k: v for k, v in _sasl().to_env().items() if k != "LOOPLINE_KAFKA_PASSWORD"}
    settings = Settings.from_env(env | {"LOOPLINE_KAFKA_PASSWORD_FILE": str(path)})
    with pytest.raises(ConfigError, match="LOOPLINE_KAFKA_PASSWORD_FILE"):
        producer_config(settings)
    found = refusals(settings.replace(env="dev"), "streams")  # stops a worker in any mode
    assert any("LOOPLINE_KAFKA_PASSWORD_FILE" in f for f in found), found


def test_the_password_reaches_children_through_their_environment_only() -> None:
    settings = _sasl()
    assert settings.to_env()["LOOPLINE_KAFKA_PASSWORD"] == PASSWORD
    assert Settings.from_env(settings.to_env()) == settings
    for shown in (repr(settings), str(settings), repr(login(settings))):
        assert PASSWORD not in shown
    assert PASSWORD not in repr(broker_credentials(settings))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LOOPLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "LOOPLINE_KAFKA_USERNAME"),
        (
            {"LOOPLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "LOOPLINE_KAFKA_USERNAME": "u"},
            "LOOPLINE_KAFKA_PASSWORD",
        ),
        ({"LOOPLINE_KAFKA_USERNAME": "u", "LOOPLINE_KAFKA_PASSWORD": "p"}, "SASL_SSL"),
        (
            {"LOOPLINE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "LOOPLINE_KAFKA_PASSWORD": "p"},
            "sends none",
        ),
        (
            {
                "LOOPLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "LOOPLINE_KAFKA_USERNAME": "u",
                "LOOPLINE_KAFKA_PASSWORD": "p",
                "LOOPLINE_KAFKA_PASSWORD_FILE": "/run/secrets/kafka",
            },
            "both set",
        ),
        (
            {
                "LOOPLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "LOOPLINE_KAFKA_USERNAME": "u",
                "LOOPLINE_KAFKA_PASSWORD": "p",
                "LOOPLINE_KAFKA_SSL_CA_FILE": "/etc/ca.pem",
            },
            "LOOPLINE_KAFKA_SSL_CA_FILE",
        ),
        ({"LOOPLINE_KAFKA_SECURITY_PROTOCOL": "SSL"}, "LOOPLINE_KAFKA_SECURITY_PROTOCOL"),
    ],
)
def test_a_half_configured_login_is_a_config_error(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


# -- the refusal -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bootstrap", "protocol", "refused"),
    [
        ("kafka:9092", None, True),
        ("10.0.0.5:9092", None, True),
        ("127.0.0.1:9092,kafka-2:9092", None, True),
        ("[2001:db8::1]:9092", None, True),
        ("127.0.0.1:9092", None, False),
        ("localhost:9092,[::1]:9093", None, False),
        ("kafka:9092", "PLAINTEXT", False),  # chosen explicitly
        ("kafka:9092", "SASL_PLAINTEXT", False),
        ("kafka:9092", "SASL_SSL", False),
    ],
)
def test_a_plaintext_broker_off_loopback_is_refused_outside_development(
    bootstrap: str, protocol: str | None, refused: bool
) -> None:
    env = {"LOOPLINE_KAFKA_BOOTSTRAP": bootstrap}
    if protocol is not None:
        env["LOOPLINE_KAFKA_SECURITY_PROTOCOL"] = protocol
    if protocol is not None and protocol.startswith("SASL_"):
        env |= {"LOOPLINE_KAFKA_USERNAME": "streams", "LOOPLINE_KAFKA_PASSWORD": "pw"}
    settings = Settings.from_env(env)
    found = [f for f in refusals(settings, "streams") if "LOOPLINE_KAFKA" in f]
    assert bool(found) == refused, found
    assert not refusals(settings.replace(env="dev"), "streams")


def test_a_plain_password_in_clear_off_loopback_is_refused_outside_development() -> None:
    env = {"LOOPLINE_KAFKA_SASL_MECHANISM": "PLAIN"}
    found = kafka_refusals(_sasl(**env))
    assert any("LOOPLINE_KAFKA_SASL_MECHANISM=PLAIN" in f for f in found), found
    assert not kafka_refusals(_sasl("SASL_SSL", **env))
    assert not kafka_refusals(_sasl(**env, LOOPLINE_KAFKA_BOOTSTRAP="127.0.0.1:9092"))
    assert not refusals(_sasl(**env).replace(env="dev"), "streams")


def kafka_refusals(settings: Settings) -> list[str]:
    return [f for f in refusals(settings, "streams") if "LOOPLINE_KAFKA" in f]


def test_the_refusal_names_the_settings_to_set() -> None:
    settings = Settings.from_env({"LOOPLINE_KAFKA_BOOTSTRAP": "kafka:9092"})
    with pytest.raises(ConfigError) as refused:
        require_safe(settings, "streams")
    message = str(refused.value)
    assert message.startswith("streams refuses to start outside development mode")
    for setting in (
        "LOOPLINE_KAFKA_BOOTSTRAP points at kafka",
        "LOOPLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        "LOOPLINE_KAFKA_USERNAME",
        "LOOPLINE_KAFKA_PASSWORD",
        "LOOPLINE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
    ):
        assert setting in message


def test_a_streams_worker_on_a_plaintext_remote_broker_exits_naming_the_settings(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env |= {"LOOPLINE_KAFKA_BOOTSTRAP": "kafka.internal:9092", "LOOPLINE_STATE_DIR": str(tmp_path)}
    returncode, said = run_worker("streams", env)
    assert returncode == 2, said
    assert "streams refuses to start outside development mode" in said, said
    assert "LOOPLINE_KAFKA_BOOTSTRAP points at kafka.internal" in said, said
    assert "LOOPLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in said, said


# -- every client ------------------------------------------------------------------------

CLIENTS = {"Producer", "Consumer", "AdminClient", "AIOKafkaConsumer", "AIOKafkaProducer", "App"}
#: what a scope that opens a client must use to build its config
LOGINS = ("producer_config", "consumer_config", "admin", "aiokafka_config", "broker_credentials")


def _client_calls(tree: ast.AST) -> list[tuple[ast.Call, ast.AST]]:
    """Every call that opens a Kafka client, with its enclosing class, else outermost
    function, else module."""
    found: list[tuple[ast.Call, ast.AST]] = []

    def visit(node: ast.AST, scope: ast.AST, cls: ast.AST | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, child, child)
                continue
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                # A nested function builds its client from its enclosing one's config.
                outer = scope if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef) else None
                visit(child, cls or outer or child, cls)
                continue
            if isinstance(child, ast.Call):
                func = child.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in CLIENTS:
                    found.append((child, scope))
            visit(child, scope, cls)

    visit(tree, tree, None)
    return found


def test_every_kafka_client_in_the_code_logs_in_through_kafka_auth() -> None:
    """A client built from a config that skips the login would reach a SASL broker as no one."""
    checked: list[str] = []
    unchecked: list[str] = []
    for package in ("loopline", "streams", "trainer", "pusher", "serving", "ops", "bench", "tests"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "test_kafka_auth.py":
                continue
            tree = ast.parse(path.read_text())
            for call, scope in _client_calls(tree):
                where = f"{path.relative_to(ROOT)}:{call.lineno}"
                scope_source = ast.unparse(scope)
                if any(f"{name}(" in scope_source for name in LOGINS):
                    checked.append(where)
                else:
                    unchecked.append(where)
    assert not unchecked, f"Kafka clients built without loopline.kafka_auth: {unchecked}"
    assert len(checked) > 20  # the scan finds the clients at all
