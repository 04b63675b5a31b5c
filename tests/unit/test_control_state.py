"""Folding ``control`` into what is in force: pauses by scope, marks by id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from loopline.contracts import Command, CommandKind
from loopline.control import make_command
from loopline.control_state import ControlState
from loopline.windows import ExcludedWindows

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def mark(a: int, b: int, scope: str = "*") -> Command:
    args = {
        "start": (T0 + timedelta(hours=a)).isoformat(),
        "end": (T0 + timedelta(hours=b)).isoformat(),
    }
    return make_command(CommandKind.MARK_ANOMALOUS, scope, args=args, reason="bots")


def test_pauses_follow_scope() -> None:
    pause_all = make_command(CommandKind.PAUSE, reason="breach", issued_by="streams.health")
    resume_shop = make_command(CommandKind.RESUME, "shop")
    commands = [pause_all, resume_shop]
    assert not ControlState.fold(commands, "shop").paused
    other = ControlState.fold(commands, "eta")
    assert other.paused and other.pause == pause_all
    again = make_command(CommandKind.PAUSE, reason="second")
    assert ControlState.fold([pause_all, again], "eta").pause == pause_all  # the first still holds


def test_marks_of_another_model_do_not_apply() -> None:
    assert ControlState.fold([mark(0, 1, "eta")], "shop").marks == {}


def test_a_malformed_mark_changes_nothing() -> None:
    broken = make_command(CommandKind.MARK_ANOMALOUS, args={"start": "yesterday"})
    assert ControlState.fold([broken], "shop").marks == {}


def test_clear_by_window_trims_and_splits_marks() -> None:
    wide = mark(0, 10)
    clear = make_command(
        CommandKind.CLEAR_ANOMALOUS,
        args={
            "start": (T0 + timedelta(hours=4)).isoformat(),
            "end": (T0 + timedelta(hours=6)).isoformat(),
        },
    )
    state = ControlState.fold([wide, clear], "shop")
    pieces = sorted((m.window.start.hour, m.window.end.hour) for m in state.marks.values())
    assert pieces == [(0, 4), (6, 10)]
    assert all(m.reason == "bots" for m in state.marks.values())


spans = st.tuples(st.integers(0, 48), st.integers(1, 24)).map(lambda t: (t[0], t[0] + t[1]))


@given(st.lists(spans, min_size=1, max_size=8), st.data())
def test_excluded_is_the_union_of_the_marks_in_force(
    windows: list[tuple[int, int]], data: st.DataObject
) -> None:
    marks = [mark(a, b) for a, b in windows]
    cleared = data.draw(st.sets(st.sampled_from([m.command_id for m in marks])))
    clears = [make_command(CommandKind.CLEAR_ANOMALOUS, args={"id": i}) for i in cleared]
    state = ControlState.fold([*marks, *clears], "shop")
    kept = [m for m in marks if m.command_id not in cleared]
    assert set(state.marks) == {m.command_id for m in kept}
    for hour in range(0, 80):
        ts = T0 + timedelta(hours=hour, minutes=30)
        inside = any(a <= hour < b for (a, b), m in zip(windows, marks, strict=True) if m in kept)
        assert (ts in state.excluded) is inside
    assert state.excluded == ExcludedWindows(m.window for m in state.marks.values())
