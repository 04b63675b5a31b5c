from __future__ import annotations

from loopline.contracts import CommandKind
from loopline.control import applies_to, make_command, read_all, send
from loopline.control_state import ControlState
from loopline.settings import Settings


def test_commands_round_trip_through_the_topic(settings: Settings) -> None:
    assert read_all(settings) == []
    pause = send(settings, make_command(CommandKind.PAUSE, "shop", reason="maintenance"))
    mark = send(
        settings,
        make_command(
            CommandKind.MARK_ANOMALOUS,
            args={"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-02T00:00:00+00:00"},
        ),
    )
    assert read_all(settings) == [pause, mark]  # different partitions: merged by issue time
    assert applies_to(pause, "shop")
    assert not applies_to(pause, "other")
    assert applies_to(mark, "other")


def test_a_command_sent_again_is_read_once_where_it_was_first(settings: Settings) -> None:
    pause = send(settings, make_command(CommandKind.PAUSE, "shop", reason="maintenance"))
    resume = send(settings, make_command(CommandKind.RESUME, "shop"))
    send(settings, pause)  # the same record put back on the topic later
    assert read_all(settings) == [pause, resume]
    assert not ControlState.fold(read_all(settings), "shop").paused
