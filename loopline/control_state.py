"""What the ``control`` topic says is in force for one model: a pause, anomalous windows.

Folding every command in topic order gives the state operators asked for; workers
report what they applied in their heartbeats. Each window marked anomalous is known by
its mark's command id, so ``loopline anomaly clear ID`` clears that mark and no other:
the windows excluded are the union of the marks still in force.

>>> from datetime import UTC, datetime
>>> from loopline.control import make_command
>>> from loopline.contracts import CommandKind
>>> day = lambda d: datetime(2026, 1, d, tzinfo=UTC).isoformat()
>>> mark = lambda a, b: make_command(CommandKind.MARK_ANOMALOUS, args={"start": day(a), "end": day(b)})
>>> first, second = mark(1, 3), mark(2, 5)
>>> clear = make_command(CommandKind.CLEAR_ANOMALOUS, args={"id": first.command_id})
>>> state = ControlState.fold([first, second, clear], "shop")
>>> [(w.start.day, w.end.day) for w in state.excluded]
[(2, 5)]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from loopline.contracts import Command, CommandKind, Window, parse_ts
from loopline.control import applies_to
from loopline.errors import Reason, RecordError
from loopline.windows import ExcludedWindows


@dataclass(frozen=True, slots=True)
class Mark:
    """A window marked anomalous, known by the id of the command that marked it."""

    mark_id: str
    scope: str
    window: Window
    reason: str
    by: str
    at: datetime


def command_window(command: Command) -> Window:
    """The ``[start, end)`` a mark or clear command names; RecordError if it names none."""
    try:
        return Window(
            parse_ts(command.args.get("start"), "start"), parse_ts(command.args.get("end"), "end")
        )
    except ValueError as exc:
        raise RecordError(Reason.OUT_OF_RANGE, str(exc)) from None


@dataclass
class ControlState:
    """The pause in force (if any) and the marks in force, for one model."""

    model: str
    pause: Command | None = None
    marks: dict[str, Mark] = field(default_factory=dict)

    @classmethod
    def fold(cls, commands: Iterable[Command], model: str) -> ControlState:
        state = cls(model)
        for command in commands:
            state.apply(command)
        return state

    @property
    def paused(self) -> bool:
        return self.pause is not None

    @property
    def excluded(self) -> ExcludedWindows:
        return ExcludedWindows(m.window for m in self.marks.values())

    def apply(self, command: Command) -> None:
        """Take one command into account; malformed windows change nothing."""
        if not applies_to(command, self.model):
            return
        kind = command.kind
        if kind is CommandKind.PAUSE:
            self.pause = self.pause or command
        elif kind is CommandKind.RESUME:
            self.pause = None
        elif kind is CommandKind.MARK_ANOMALOUS:
            try:
                window = command_window(command)
            except RecordError:
                return
            mark = Mark(
                command.command_id,
                command.scope,
                window,
                command.reason,
                command.issued_by,
                command.issued_at,
            )
            self.marks[mark.mark_id] = mark
        elif kind is CommandKind.CLEAR_ANOMALOUS:
            self._clear(command)

    def _clear(self, command: Command) -> None:
        mark_id = command.args.get("id")
        if isinstance(mark_id, str):
            self.marks.pop(mark_id, None)
            return
        try:  # a clear by window alone subtracts it from every mark
            window = command_window(command)
        except RecordError:
            return
        for mark in list(self.marks.values()):
            rest = ExcludedWindows([mark.window])
            rest.clear(window)
            del self.marks[mark.mark_id]
            for i, piece in enumerate(rest):
                piece_id = mark.mark_id if i == 0 else f"{mark.mark_id}.{i}"
                self.marks[piece_id] = replace(mark, mark_id=piece_id, window=piece)
