from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rich.console import Console

from loopline.contracts import Command, CommandKind
from loopline.control import make_command
from loopline.settings import Settings
from ops.demo_operator import MARGIN, PATIENCE, Operator, describe_breaches

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
BURST = (T0, T0 + timedelta(seconds=15))


def operator() -> tuple[Operator, list[Command], Console]:
    sent: list[Command] = []

    def send(_: Settings, command: Command) -> Command:
        sent.append(command)
        return command

    console = Console(record=True, width=200)
    op = Operator(Settings.from_env({"LOOPLINE_ENV": "dev"}), console, send)
    op.burst = BURST
    return op, sent, console


def auto_pause(check: str) -> Command:
    evidence = {"breaches": [{"check": check, "value": 6.2, "baseline": 1017.0, "limit": 3.0}]}
    return make_command(CommandKind.PAUSE, evidence=evidence, issued_by="streams.health")


def test_the_burst_is_fenced_with_a_margin_once_over_then_training_resumes() -> None:
    op, sent, console = operator()
    op.look([auto_pause("volume_ratio")], now=T0 + timedelta(seconds=5))
    assert sent == []  # bots still at it
    op.look([], now=BURST[1] + MARGIN + timedelta(seconds=1))
    assert [c.kind for c in sent] == [CommandKind.MARK_ANOMALOUS, CommandKind.RESUME]
    window = sent[0].args
    assert (window["start"], window["end"]) == (
        (BURST[0] - MARGIN).isoformat(),
        (BURST[1] + MARGIN).isoformat(),
    )
    text = console.export_text()
    assert "$ loopline anomaly mark --start 2026-05-01T11:59:55+00:00" in text
    assert "$ loopline resume" in text


def test_a_pause_after_the_fence_is_the_burst_s_own_labels_and_is_resumed() -> None:
    op, sent, _ = operator()
    op.look([auto_pause("volume_ratio")], now=BURST[1] + MARGIN + timedelta(seconds=1))
    op.look([auto_pause("label_rate_change")], now=BURST[1] + timedelta(seconds=40))
    assert [c.kind for c in sent] == [
        CommandKind.MARK_ANOMALOUS,
        CommandKind.RESUME,
        CommandKind.RESUME,
    ]


def test_without_an_auto_pause_the_operator_still_fences_the_burst_after_a_while() -> None:
    op, sent, _ = operator()
    op.look([], now=BURST[1] + MARGIN + timedelta(seconds=1))
    assert sent == []
    op.look([], now=BURST[1] + PATIENCE + timedelta(seconds=1))
    assert [c.kind for c in sent] == [CommandKind.MARK_ANOMALOUS, CommandKind.RESUME]


def test_the_operator_s_own_pauses_are_not_the_monitor_s() -> None:
    op, sent, _ = operator()
    own = make_command(CommandKind.PAUSE, issued_by="demo-operator")
    op.look([own], now=BURST[1] + MARGIN + timedelta(seconds=1))
    assert sent == []


def test_breaches_read_as_numbers_with_their_baseline_and_limit() -> None:
    evidence = auto_pause("volume_ratio").evidence
    assert describe_breaches(evidence) == "volume_ratio 6.2 (baseline 1,017, limit 3)"
