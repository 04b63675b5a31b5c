from __future__ import annotations

from pathlib import Path

import pytest

from loopline.errors import ConfigError
from loopline.settings import TOPICS, Settings


def test_defaults_target_the_local_stack() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.redis_url.startswith("redis://127.0.0.1:6379")
    assert [settings.topic(t) for t in TOPICS[:2]] == ["loopline.events", "loopline.labels"]


def test_environment_is_read_with_types() -> None:
    settings = Settings.from_env(
        {
            "LOOPLINE_PARTITIONS": "6",
            "LOOPLINE_SPEC": "/x/spec.toml",
            "LOOPLINE_SIGNING_KEY": "s3cret",
        }
    )
    assert settings.partitions == 6
    assert settings.spec == Path("/x/spec.toml")
    assert settings.signing_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_unknown_variable_is_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="LOOPLINE_REDIS_URI"):
        Settings.from_env({"LOOPLINE_REDIS_URI": "redis://x"})


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="LOOPLINE_PARTITIONS"):
        Settings.from_env({"LOOPLINE_PARTITIONS": "0"})
    with pytest.raises(ConfigError, match="LOOPLINE_TOPIC_PREFIX"):
        Settings.from_env({"LOOPLINE_TOPIC_PREFIX": "a b"})


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ValueError, match="frozen"):
        settings.partitions = 9  # type: ignore[misc]
    assert settings.replace(partitions=9).partitions == 9


def test_every_setting_documents_its_variable() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description is not None
        assert field.description.startswith(f"LOOPLINE_{name.upper()}:")


def test_unknown_topic_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown topic"):
        Settings.from_env({}).topic("event")


def test_settings_survive_the_environment_of_a_child_process() -> None:
    settings = Settings.from_env(
        {"LOOPLINE_SIGNING_KEY": "k", "LOOPLINE_SERVING_TOKEN": "t"}
    ).replace(partitions=7)
    env = settings.process_env({"PATH": "/bin", "LOOPLINE_PARTITIONS": "1"})
    assert env["PATH"] == "/bin"
    assert Settings.from_env({k: v for k, v in env.items() if k != "PATH"}) == settings
