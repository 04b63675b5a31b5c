"""Operator commands put the right Command on ``control`` and list checkpoints."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.contracts import CommandKind
from loopline.control import read_all
from loopline.holdout import DEVELOPMENT_KEY
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from loopline.windows import ExcludedWindows
from trainer.checkpointer import Checkpointer
from trainer.learner import Learner


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return settings.to_env() | {"COLUMNS": "300"}


def invoke(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_training_commands_go_to_control(settings: Settings, env: dict[str, str]) -> None:
    spec = load_spec(DEFAULT_SPEC)
    manifest = Checkpointer(settings, spec).save(
        Learner(spec, spec.build_model(), ExcludedWindows(), holdout_key=DEVELOPMENT_KEY),
        {0: 0},
        None,
        "L1",
    )
    invoke(env, "pause", "--model", spec.name, "--reason", "deploy")
    invoke(env, "resume")
    window = ("--start", "2026-01-01T00:00:00+00:00", "--end", "2026-01-02T00:00:00Z")
    marked = invoke(env, "anomaly", "mark", *window, "--reason", "bots")
    mark_id = marked.rsplit("anomaly id ", 1)[1].split()[0]
    invoke(env, "anomaly", "clear", mark_id)
    out = invoke(env, "replay", "--from", manifest.checkpoint_id, "--reason", "relearn")
    commands = read_all(settings)
    assert [c.kind for c in commands] == [
        CommandKind.PAUSE,
        CommandKind.RESUME,
        CommandKind.MARK_ANOMALOUS,
        CommandKind.CLEAR_ANOMALOUS,
        CommandKind.REPLAY,
    ]
    pause, resume, mark, clear, replay = commands
    assert (pause.scope, pause.reason) == (spec.name, "deploy")
    assert resume.scope == "*"
    assert mark.args == {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-02T00:00:00+00:00"}
    assert mark.command_id == mark_id and clear.args == {"id": mark_id, **mark.args}
    assert "no trainer in scope is running" in marked
    assert (replay.scope, replay.args) == (spec.name, {"from": manifest.checkpoint_id})
    assert f"replay-{replay.command_id}" in out
    listing = invoke(env, "checkpoints", "list")
    assert manifest.checkpoint_id in listing
    assert "yes" in listing


def test_a_bad_window_is_rejected_before_sending(settings: Settings, env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app,
        [
            "anomaly",
            "mark",
            "--start",
            "2026-01-02T00:00:00Z",
            "--end",
            "2026-01-01T00:00:00Z",
            "--reason",
            "x",
        ],
        env=env,
    )
    assert result.exit_code != 0
    result = CliRunner().invoke(
        app,
        [
            "anomaly",
            "mark",
            "--start",
            "yesterday",
            "--end",
            "2026-01-01T00:00:00Z",
            "--reason",
            "x",
        ],
        env=env,
    )
    assert result.exit_code != 0
    assert read_all(settings) == []
