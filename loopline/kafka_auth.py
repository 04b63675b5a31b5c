"""How every Kafka client logs in: one mapping from settings to client security config.

Every Kafka client Loopline opens takes its security settings from here: confluent-kafka
producers, consumers and admin clients (:func:`confluent_config`, merged by
:mod:`loopline.kafka`), aiokafka clients (:func:`aiokafka_config`) and the faust app
(``streams.topology`` builds its ``broker_credentials`` from :func:`login`).

The password comes from ``LOOPLINE_KAFKA_PASSWORD`` or the file ``LOOPLINE_KAFKA_PASSWORD_FILE``
names, read when a client is built; it is never logged (:class:`Login` leaves it out
of its repr) and reaches child processes only through their environment.

>>> from loopline.settings import Settings
>>> confluent_config(Settings())
{'security.protocol': 'PLAINTEXT'}
>>> s = Settings.from_env({"LOOPLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
...     "LOOPLINE_KAFKA_USERNAME": "trainer", "LOOPLINE_KAFKA_PASSWORD": "pw"})
>>> login(s)
Login(protocol='SASL_PLAINTEXT', mechanism='SCRAM-SHA-512', username='trainer', ca_file=None)
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopline.errors import ConfigError
from loopline.settings import ENV_PREFIX, Settings


@dataclass(frozen=True, slots=True)
class Login:
    """What a client presents to the broker. ``mechanism`` and ``username`` are None
    without SASL."""

    protocol: str
    mechanism: str | None
    username: str | None
    password: str | None = field(repr=False)
    ca_file: Path | None

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")


def _password(settings: Settings) -> str | None:
    if settings.kafka_password is not None:
        return settings.kafka_password.get_secret_value()
    path = settings.kafka_password_file
    if path is None:
        return None
    try:
        password = path.read_text().rstrip("\r\n")
    except OSError as exc:
        msg = f"{ENV_PREFIX}KAFKA_PASSWORD_FILE: cannot read {path}: {exc.strerror}"
        raise ConfigError(msg) from None
    if not password:
        raise ConfigError(f"{ENV_PREFIX}KAFKA_PASSWORD_FILE: {path} is empty")
    return password


def login(settings: Settings) -> Login:
    """The login these settings describe (the password read now); :class:`ConfigError`
    if a password file cannot be read."""
    protocol = settings.kafka_security_protocol or "PLAINTEXT"
    if not protocol.startswith("SASL_"):
        return Login(protocol, None, None, None, None)
    return Login(
        protocol,
        settings.kafka_sasl_mechanism,
        settings.kafka_username,
        _password(settings),
        settings.kafka_ssl_ca_file,
    )


def confluent_config(settings: Settings) -> dict[str, Any]:
    """librdkafka properties (confluent-kafka producers, consumers and admin clients).

    >>> s = Settings.from_env({"LOOPLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    ...     "LOOPLINE_KAFKA_USERNAME": "ops", "LOOPLINE_KAFKA_PASSWORD": "pw",
    ...     "LOOPLINE_KAFKA_SSL_CA_FILE": "/etc/kafka/ca.pem"})
    >>> sorted(confluent_config(s).items())  # doctest: +NORMALIZE_WHITESPACE
    [('sasl.mechanism', 'SCRAM-SHA-512'), ('sasl.password', 'pw'), ('sasl.username', 'ops'),
     ('security.protocol', 'SASL_SSL'), ('ssl.ca.location', '/etc/kafka/ca.pem')]
    """
    auth = login(settings)
    config: dict[str, Any] = {"security.protocol": auth.protocol}
    if auth.sasl:
        config |= {
            "sasl.mechanism": auth.mechanism,
            "sasl.username": auth.username,
            "sasl.password": auth.password,
        }
    if auth.tls and auth.ca_file is not None:
        config["ssl.ca.location"] = str(auth.ca_file)
    return config


def ssl_context(auth: Login) -> ssl.SSLContext | None:
    """The TLS context of an asyncio client (aiokafka, faust): the broker's certificate
    checked against ``ca_file``, else the system's CAs, and its host name checked."""
    if not auth.tls:
        return None
    cafile = None if auth.ca_file is None else str(auth.ca_file)
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        msg = f"{ENV_PREFIX}KAFKA_SSL_CA_FILE: cannot load {cafile}: {exc}"
        raise ConfigError(msg) from None


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of an aiokafka client (``AIOKafkaConsumer(**aiokafka_config(s))``);
    the same ones faust passes on from its ``broker_credentials``."""
    auth = login(settings)
    config: dict[str, Any] = {"security_protocol": auth.protocol}
    if auth.sasl:
        config |= {
            "sasl_mechanism": auth.mechanism,
            "sasl_plain_username": auth.username,
            "sasl_plain_password": auth.password,
            "ssl_context": ssl_context(auth),
        }
    return config
