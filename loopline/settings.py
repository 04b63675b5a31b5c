"""Settings: one frozen object, read once from ``LOOPLINE_*`` environment variables.

Defaults work against the local stack (``loopline dev up``). A ``LOOPLINE_*`` variable
that names no setting is rejected, so a typo never silently falls back to a default.

>>> Settings.from_env({"LOOPLINE_TOPIC_PREFIX": "shop."}).topic("events")
'shop.events'
>>> Settings.from_env({"LOOPLINE_KAFKA_BOOTSTRAPS": "x:9092"})
Traceback (most recent call last):
...
loopline.errors.ConfigError: unknown environment variable LOOPLINE_KAFKA_BOOTSTRAPS; known: ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from loopline.errors import ConfigError
from loopline.spec import DEFAULT_SPEC, Spec, load_spec

ENV_PREFIX = "LOOPLINE_"

#: settings whose values are secret (kept out of reprs, passed on to child processes)
SECRETS = (
    "signing_key",
    "pusher_signing_key",
    "serving_token",
    "holdout_key",
    "operator_key",
    "kafka_password",
)

TOPICS = ("events", "labels", "examples", "deadletter", "control", "checkpoints", "predictions")


class Settings(BaseSettings):
    """Everything a Loopline process needs to know about its environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        description="LOOPLINE_KAFKA_BOOTSTRAP: Kafka bootstrap servers, comma-separated.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] | None = Field(
        None,
        description="LOOPLINE_KAFKA_SECURITY_PROTOCOL: how every Kafka client talks to the broker: `SASL_SSL` (TLS and a SASL login), `SASL_PLAINTEXT` (a SASL login, no TLS) or `PLAINTEXT` (neither). Unset means PLAINTEXT, which workers refuse outside development mode unless the broker is on loopback; set `PLAINTEXT` explicitly to accept an unauthenticated broker elsewhere.",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512",
        description="LOOPLINE_KAFKA_SASL_MECHANISM: the SASL mechanism of the login (SASL protocols only).",
    )
    kafka_username: str | None = Field(
        None,
        description="LOOPLINE_KAFKA_USERNAME: the broker principal this process logs in as (SASL protocols only).",
    )
    kafka_password: SecretStr | None = Field(
        None,
        description="LOOPLINE_KAFKA_PASSWORD: the password of LOOPLINE_KAFKA_USERNAME; or use LOOPLINE_KAFKA_PASSWORD_FILE.",
    )
    kafka_password_file: Path | None = Field(
        None,
        description="LOOPLINE_KAFKA_PASSWORD_FILE: a file holding the password of LOOPLINE_KAFKA_USERNAME (a trailing newline is dropped); read each time a client connects.",
    )
    kafka_ssl_ca_file: Path | None = Field(
        None,
        description="LOOPLINE_KAFKA_SSL_CA_FILE: PEM file of the CA that signed the broker's certificate (SASL_SSL only; the system's CAs when unset).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="LOOPLINE_REDIS_URL: Redis for features, routing and state.",
    )
    redis_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="LOOPLINE_REDIS_TIMEOUT_SECONDS: how long one Redis call waits for an answer; a hung Redis becomes an error, never a hang.",
    )
    redis_connect_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="LOOPLINE_REDIS_CONNECT_TIMEOUT_SECONDS: how long opening a Redis connection may take.",
    )
    redis_health_check_seconds: float = Field(
        15.0,
        ge=0,
        description="LOOPLINE_REDIS_HEALTH_CHECK_SECONDS: a Redis connection idle this long is pinged before reuse (0: never).",
    )
    redis_retries: int = Field(
        3,
        ge=0,
        description="LOOPLINE_REDIS_RETRIES: retries, with jittered backoff, of a Redis call whose connection was refused or reset; a timeout is not retried.",
    )
    serving_redis_timeout_seconds: float = Field(
        0.1,
        gt=0,
        description="LOOPLINE_SERVING_REDIS_TIMEOUT_SECONDS: serving's Redis timeout; a slow Redis turns into fallback answers.",
    )
    topic_prefix: str = Field(
        "loopline.",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="LOOPLINE_TOPIC_PREFIX: prefix of every topic and Redis key.",
    )
    partitions: int = Field(
        3,
        ge=1,
        description="LOOPLINE_PARTITIONS: partitions per topic when Loopline creates topics.",
    )
    spec: Path = Field(DEFAULT_SPEC, description="LOOPLINE_SPEC: the use-case spec file (TOML).")
    state_dir: Path = Field(
        Path(".loopline"),
        description="LOOPLINE_STATE_DIR: local stack pids and logs, worker state.",
    )
    checkpoint_dir: Path = Field(
        Path(".loopline/checkpoints"),
        description="LOOPLINE_CHECKPOINT_DIR: where the trainer writes checkpoints.",
    )
    env: Literal["production", "dev"] = Field(
        "production",
        description="LOOPLINE_ENV: `dev` accepts the well-known development keys and holdout key, unsigned control Commands while no operator keys are set, no serving token, an unprotected Redis off loopback and a Kafka broker off loopback without a login; anything else is production, where workers refuse them.",
    )
    signing_key: SecretStr | None = Field(
        None,
        description="LOOPLINE_SIGNING_KEY: the trainer's Ed25519 private key that signs checkpoints (base64, or the path of a key file from `loopline keys new`); only the trainer holds it.",
    )
    trainer_public_key: str | None = Field(
        None,
        description="LOOPLINE_TRAINER_PUBLIC_KEY: the trainer's Ed25519 public key (base64 or key file path) that the pusher, serving and operators verify checkpoints with.",
    )
    pusher_signing_key: SecretStr | None = Field(
        None,
        description="LOOPLINE_PUSHER_SIGNING_KEY: the pusher's Ed25519 private key that signs verdicts (base64 or key file path); only the pusher holds it.",
    )
    pusher_public_key: str | None = Field(
        None,
        description="LOOPLINE_PUSHER_PUBLIC_KEY: the pusher's Ed25519 public key (base64 or key file path) serving verifies verdicts with.",
    )
    holdout_key: SecretStr | None = Field(
        None,
        description="LOOPLINE_HOLDOUT_KEY: the secret that keys the holdout slice's hash of event ids (at least 16 characters, or a key file path); the trainer and the pusher hold the same one.",
    )
    operator_key: SecretStr | None = Field(
        None,
        description="LOOPLINE_OPERATOR_KEY: this operator's Ed25519 private key that signs control Commands: a `NAME.key` file from `loopline keys new --operator NAME` (the name is the identity), or NAME=base64; the streams worker holds its own for auto-pauses.",
    )
    operator_keys: str | None = Field(
        None,
        description="LOOPLINE_OPERATOR_KEYS: the operators' Ed25519 public keys that control readers accept Commands from: a directory of NAME.pub files, or a comma-separated list of NAME=base64 or NAME.pub paths.",
    )
    publish_timeout_seconds: float = Field(
        15.0,
        gt=0,
        description="LOOPLINE_PUBLISH_TIMEOUT_SECONDS: how long a publish may wait for the broker before failing.",
    )
    publish_buffer_messages: int = Field(
        200_000,
        gt=0,
        description="LOOPLINE_PUBLISH_BUFFER_MESSAGES: records the Publisher buffers before producing blocks.",
    )
    serving_host: str = Field(
        "127.0.0.1", description="LOOPLINE_SERVING_HOST: address serving binds."
    )
    serving_port: int = Field(
        8080, ge=0, le=65535, description="LOOPLINE_SERVING_PORT: port serving binds."
    )
    serving_log_events: bool = Field(
        True,
        description="LOOPLINE_SERVING_LOG_EVENTS: /predict publishes the event it scored (features, online features read, versions) on events; off only for apps that still publish every event themselves.",
    )
    serving_token: SecretStr | None = Field(
        None, description="LOOPLINE_SERVING_TOKEN: bearer token /predict requires, if set."
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="LOOPLINE_METRICS_PORT: Prometheus port of a worker (0: none).",
    )
    trainer_lease_seconds: float = Field(
        15.0,
        gt=0,
        description="LOOPLINE_TRAINER_LEASE_SECONDS: TTL of a trainer's lease on its model version, renewed every third of it; a trainer restarted after a crash waits up to this long for it, and one that cannot renew it within this long stops.",
    )
    log_level: str = Field("INFO", description="LOOPLINE_LOG_LEVEL: logging level.")
    events_retention_days: float = Field(
        7.0,
        gt=0,
        description="LOOPLINE_EVENTS_RETENTION_DAYS: retention.ms of the events topic Loopline creates; streams must read an event within it.",
    )
    labels_retention_days: float = Field(
        7.0,
        gt=0,
        description="LOOPLINE_LABELS_RETENTION_DAYS: retention.ms of the labels topic Loopline creates.",
    )
    examples_retention_days: float = Field(
        30.0,
        gt=0,
        description="LOOPLINE_EXAMPLES_RETENTION_DAYS: retention.ms of the examples topic; a trainer rewinding to a checkpoint replays from it, so keep it past the oldest checkpoint kept.",
    )
    deadletter_retention_days: float = Field(
        14.0,
        gt=0,
        description="LOOPLINE_DEADLETTER_RETENTION_DAYS: retention.ms of the deadletter topic: how long operators have to look at rejected records.",
    )
    predictions_retention_days: float = Field(
        7.0,
        gt=0,
        description="LOOPLINE_PREDICTIONS_RETENTION_DAYS: retention.ms of the predictions topic.",
    )
    checkpoints_retention_days: float = Field(
        30.0,
        gt=0,
        description="LOOPLINE_CHECKPOINTS_RETENTION_DAYS: retention.ms of the checkpoints topic (manifests; the blobs live in the checkpoint store).",
    )
    control_applied_days: float = Field(
        30.0,
        gt=0,
        description="LOOPLINE_CONTROL_APPLIED_DAYS: how long the record that a serving Command was applied is kept, so it is never applied twice; keep it past the broker's offsets.retention.minutes.",
    )

    @model_validator(mode="after")
    def _kafka_login_is_whole(self) -> Settings:
        """Kafka credentials that would be ignored, or a SASL login without them, are errors."""
        sasl = (self.kafka_security_protocol or "PLAINTEXT").startswith("SASL_")
        password = self.kafka_password is not None or self.kafka_password_file is not None
        if self.kafka_password is not None and self.kafka_password_file is not None:
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_PASSWORD and {ENV_PREFIX}KAFKA_PASSWORD_FILE are both set: keep one"
            )
        if sasl and not (self.kafka_username and password):
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} logs in: set "
                f"{ENV_PREFIX}KAFKA_USERNAME and {ENV_PREFIX}KAFKA_PASSWORD (or _FILE)"
            )
        if not sasl and (self.kafka_username or password):
            raise ValueError(
                f"Kafka credentials are set but {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL is "
                f"{self.kafka_security_protocol or 'unset (PLAINTEXT)'}, which sends none: "
                "set it to SASL_SSL or SASL_PLAINTEXT"
            )
        if self.kafka_ssl_ca_file is not None and self.kafka_security_protocol != "SASL_SSL":
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SSL_CA_FILE is set but {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL "
                "is not SASL_SSL"
            )
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``LOOPLINE_*`` variables (``os.environ`` by default), rejecting unknown ones."""
        env = os.environ if environ is None else environ
        known = {ENV_PREFIX + name.upper() for name in cls.model_fields}
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            msg = f"unknown environment variable {unknown[0]}; known: {', '.join(sorted(known))}"
            raise ConfigError(msg)
        values: dict[str, Any] = {
            name: env[ENV_PREFIX + name.upper()]
            for name in cls.model_fields
            if ENV_PREFIX + name.upper() in env
        }
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            if not err["loc"]:  # a check across settings names them itself
                raise ConfigError(err["msg"].removeprefix("Value error, ")) from None
            name = str(err["loc"][0])
            msg = f"{ENV_PREFIX}{name.upper()}: {err['msg']} (got {err.get('input')!r})"
            raise ConfigError(msg) from None

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: Any, init_settings: Any, *_: Any, **__: Any
    ) -> tuple[Any, ...]:
        # The environment is read once, by from_env, so that unknown names are caught.
        return (init_settings,)

    def topic(self, name: str) -> str:
        """The full name of one of Loopline's topics."""
        if name not in TOPICS:
            raise ValueError(f"unknown topic {name!r}; topics are {TOPICS}")
        return self.topic_prefix + name

    def key(self, *parts: str) -> str:
        """A Redis key in this deployment's namespace."""
        return self.topic_prefix + ":".join(parts)

    @property
    def dev(self) -> bool:
        """Whether this is explicit development mode (``LOOPLINE_ENV=dev``)."""
        return self.env == "dev"

    def load_spec(self) -> Spec:
        return load_spec(self.spec)

    def to_env(self) -> dict[str, str]:
        """The ``LOOPLINE_*`` variables that make :meth:`from_env` read these settings back."""
        values = self.model_dump(mode="json")
        for name in SECRETS:
            secret = getattr(self, name)
            if secret is not None:
                values[name] = secret.get_secret_value()
        return {ENV_PREFIX + k.upper(): str(v) for k, v in values.items() if v is not None}

    def process_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment for a child process with these settings: ``base`` (``os.environ``
        by default) without its own ``LOOPLINE_*`` variables, plus :meth:`to_env`."""
        base = os.environ if base is None else base
        return {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX)} | self.to_env()

    def replace(self, **changes: Any) -> Settings:
        return type(self).model_validate({**self.model_dump(), **changes})
