"""What a worker refuses to start with outside development mode.

Development mode (``LOOPLINE_ENV=dev``) is explicit. Anywhere else a worker does not
start on the well-known development keys or with a key it needs missing (signing
keys, the holdout key, the operators' public keys a reader of ``control`` applies
Commands by, the operator key the streams' auto-pause is signed with), with serving
bound off loopback without a bearer token, with a Redis off loopback that asks for no
password, or with a Kafka broker off loopback and no login: each is how a default
deployment ends up serving what anyone signed, or obeying whoever writes ``control``.
An unauthenticated broker off loopback is accepted only when chosen explicitly,
``LOOPLINE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT`` (a network that only Loopline reaches).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Literal
from urllib.parse import urlparse

from loopline.errors import ConfigError
from loopline.holdout import holdout_key
from loopline.kafka_auth import login
from loopline.settings import ENV_PREFIX, Settings
from loopline.signing.commands import operator_keys, require_operator
from loopline.signing.keys import Signer, private_key, public_key

Worker = Literal["streams", "trainer", "pusher", "serving"]

#: (signer, private?) keys each worker needs
NEEDS: dict[Worker, tuple[tuple[Signer, bool], ...]] = {
    "streams": (),
    "trainer": (("trainer", True),),
    "pusher": (("trainer", False), ("pusher", True)),
    "serving": (("trainer", False), ("pusher", False)),
}

#: workers that compute holdout membership, and so need the holdout key
HOLDOUT: frozenset[Worker] = frozenset({"trainer", "pusher"})
#: workers that apply Commands from control, and so need the operators' public keys
CONTROL_READERS: frozenset[Worker] = frozenset({"trainer", "pusher"})


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _redis_refusal(url: str) -> str | None:
    parsed = urlparse(url)
    if parsed.scheme == "unix" or is_loopback(parsed.hostname) or parsed.password:
        return None
    return (
        f"{ENV_PREFIX}REDIS_URL points at {parsed.hostname} without a password: put one in "
        "the URL (redis://user:password@host:port/db)"
    )


def bootstrap_hosts(bootstrap: str) -> list[str]:
    """The host of each bootstrap server.

    >>> bootstrap_hosts("kafka-1:9092, 10.0.0.2:9093,[::1]:9092,SASL_SSL://k:9094,solo")
    ['kafka-1', '10.0.0.2', '::1', 'k', 'solo']
    """
    hosts = []
    for server in bootstrap.split(","):
        server = server.strip().rpartition("://")[2]
        if server.startswith("["):
            hosts.append(server[1:].partition("]")[0])
        elif server.count(":") == 1:
            hosts.append(server.partition(":")[0])
        else:  # no port, or a bare IPv6 address
            hosts.append(server)
    return hosts


def _kafka_refusal(settings: Settings) -> str | None:
    remote = [h for h in bootstrap_hosts(settings.kafka_bootstrap) if not is_loopback(h)]
    protocol = settings.kafka_security_protocol
    if not remote:
        return None
    if protocol == "SASL_PLAINTEXT" and settings.kafka_sasl_mechanism == "PLAIN":
        return (
            f"{ENV_PREFIX}KAFKA_SASL_MECHANISM=PLAIN over SASL_PLAINTEXT sends the password "
            f"to {remote[0]} in clear: use SCRAM-SHA-512, or "
            f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL=SASL_SSL"
        )
    if protocol is not None:  # a login, or PLAINTEXT chosen explicitly
        return None
    return (
        f"{ENV_PREFIX}KAFKA_BOOTSTRAP points at {remote[0]} without a login "
        f"({ENV_PREFIX}KAFKA_SECURITY_PROTOCOL is unset, so PLAINTEXT: whoever reaches the "
        "broker can write every topic, control included): set "
        f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT) with "
        f"{ENV_PREFIX}KAFKA_USERNAME and {ENV_PREFIX}KAFKA_PASSWORD (or _FILE), or "
        f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL=PLAINTEXT to accept an unauthenticated broker"
    )


def refusals(settings: Settings, worker: Worker) -> list[str]:
    """Everything that stops ``worker`` from starting with these settings."""
    found = []
    for signer, private in NEEDS[worker]:
        try:
            (private_key if private else public_key)(settings, signer)
        except ConfigError as exc:
            found.append(str(exc))
    checks: list[Callable[[], object]] = [
        lambda: login(settings),  # a password file that cannot be read stops a worker in any mode
    ]
    if worker in HOLDOUT:
        checks.append(lambda: holdout_key(settings))
    if worker in CONTROL_READERS:
        checks.append(lambda: operator_keys(settings))
    if worker == "streams" and settings.load_spec().health.auto_pause:
        checks.append(lambda: require_operator(settings, "the data-health monitor's auto-pause"))
    for check in checks:
        try:
            check()
        except ConfigError as exc:
            found.append(str(exc))
    if settings.dev:
        return found
    owners = (
        ("trainer", "signing_key"),
        ("pusher", "pusher_signing_key"),
        ("streams", "operator_key"),
    )
    for owner, key in owners:
        if worker != owner and getattr(settings, key) is not None:
            found.append(
                f"{ENV_PREFIX}{key.upper()} is set for {worker}: a private key belongs to its "
                "signer only; give the others the public key"
            )
    if (redis := _redis_refusal(settings.redis_url)) is not None:
        found.append(redis)
    if (kafka := _kafka_refusal(settings)) is not None:
        found.append(kafka)
    open_bind = not is_loopback(settings.serving_host)
    if worker == "serving" and settings.serving_token is None and open_bind:
        found.append(
            f"{ENV_PREFIX}SERVING_TOKEN is not set while serving binds "
            f"{settings.serving_host}: set a bearer token, or bind loopback"
        )
    return found


def require_safe(settings: Settings, worker: Worker) -> None:
    """Raise :class:`ConfigError` naming every setting to fix unless ``worker`` may start."""
    found = refusals(settings, worker)
    if found:
        msg = (
            f"{worker} refuses to start outside development mode ({ENV_PREFIX}ENV="
            f"{settings.env}): " + "; ".join(found)
        )
        raise ConfigError(msg)
