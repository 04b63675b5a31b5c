"""Poison on ``control``: records no Command can be read from, kept forever.

``control`` is read from its start by every trainer and by the CLI on each call, so one
bad record would stop them all for good if it were fatal. Each is skipped and counted;
the valid commands around it still apply.
"""

from __future__ import annotations

import json
import random

import orjson
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner, Result

from loopline.cli import app
from loopline.contracts import CommandKind
from loopline.control import make_command, read_log, send
from loopline.kafka import producer_config
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, Spec, load_spec
from tests.integration.trainer.trainer_support import step_until
from trainer.core import Trainer

MARKUP = "[/nope] bots [bold]"  # rich markup that does not parse


def poison(rng: random.Random) -> list[bytes]:
    """Records that hold no Command: each a different way for a decoder to fail."""
    good = orjson.loads(make_command(CommandKind.PAUSE, reason="poison").to_json())

    def command(**changes: object) -> bytes:
        return json.dumps({**good, **changes}).encode()

    deep: object = 1
    for _ in range(300):
        deep = {"k": deep}
    return [
        command(issued_at="9999-12-31T23:59:59-10:00"),  # overflows when converted to UTC
        command(issued_at="0001-01-01T00:00:00+05:00"),
        command(issued_at=1767225600),
        command(args={"deep": deep}),  # decodes, but would not encode again
        command(schema_version=18446744073709551616),
        b'{"schema_version": 1, "kind": "pause", "command_id": "\xff\xfe"}',  # not UTF-8
        bytes(rng.randrange(256) for _ in range(64)),
        b"",
        b"[" * 5000,
    ]


def publish_raw(settings: Settings, values: list[bytes]) -> None:
    producer = Producer(producer_config(settings))
    for value in values:
        producer.produce(settings.topic("control"), value, b"*")
    assert producer.flush(10) == 0


def cli(settings: Settings, *args: str, code: int = 0) -> Result:
    env = settings.process_env({"COLUMNS": "250"})
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == code, f"loopline {' '.join(args)}: {result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


@pytest.fixture
def spec() -> Spec:
    return load_spec(DEFAULT_SPEC)


@pytest.fixture
def poisoned(settings: Settings) -> tuple[Settings, int]:
    """Control with poison first, then a valid mark whose text is hostile markup."""
    bad = poison(random.Random(3))
    publish_raw(settings, bad)
    mark = make_command(
        CommandKind.MARK_ANOMALOUS,
        reason=MARKUP,
        args={"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
        issued_by=MARKUP,
    )
    send(settings, mark)
    return settings, len(bad)


def test_cli_answers_over_poison(poisoned: tuple[Settings, int]) -> None:
    s, bad = poisoned
    control = read_log(s)
    assert control.unreadable == bad
    assert [c.kind for c in control.commands] == [CommandKind.MARK_ANOMALOUS]

    report = orjson.loads(cli(s, "status", "--json").stdout)
    assert report["training"]["control_unreadable"] == bad
    assert report["training"]["paused"] is False
    assert [w["reason"] for w in report["training"]["anomalous_windows"]] == [MARKUP]
    shown = cli(s, "status").output
    assert f"{bad} unreadable records skipped" in shown
    assert "[/nope]" in shown  # shown as written, not read as markup

    listed = cli(s, "anomaly", "list").output
    assert "[/nope]" in listed
    rows = orjson.loads(cli(s, "anomaly", "list", "--json").stdout)
    assert [r["reason"] for r in rows] == [MARKUP]

    history = cli(s, "history")
    assert f"control: {bad} unreadable records skipped" in history.output
    assert "mark_anomalous" in history.output

    paused = cli(s, "pause", "--reason", "after the poison", "--wait", "0")
    assert "records on control are not readable commands" in paused.output
    refused = cli(s, "pause", "--reason", "again", "--wait", "0", code=1)
    assert "already paused" in refused.output
    cli(s, "resume", "--wait", "0")
    assert [c.kind for c in read_log(s).commands][-2:] == [CommandKind.PAUSE, CommandKind.RESUME]


def test_trainer_applies_the_valid_commands_around_poison(
    poisoned: tuple[Settings, int], spec: Spec
) -> None:
    s, bad = poisoned
    send(s, make_command(CommandKind.PAUSE, spec.name, reason="after the poison"))
    trainer = Trainer(s, spec, batch_size=100)
    try:
        trainer.start()  # rebuilds its state from control's start, poison included
        assert trainer.paused
        assert len(tuple(trainer.windows)) == 1
        unreadable = {"model": spec.name}
        metric = "loopline_trainer_control_unreadable_total"
        assert trainer.exporter.registry.get_sample_value(metric, unreadable) == bad

        # While following: more poison, then a resume that must still apply.
        more = poison(random.Random(4))
        publish_raw(s, more)
        send(s, make_command(CommandKind.RESUME, spec.name))
        step_until(trainer, lambda: not trainer.paused, 30, "the resume after more poison")
        assert trainer.exporter.registry.get_sample_value(metric, unreadable) == bad + len(more)
    finally:
        trainer.close()
