from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.image import imread

from ops.demo_plot import ANOMALOUS_COLOUR, PAUSED_COLOUR, figure, plot
from ops.demo_timeline import (
    CheckpointPoint,
    Mark,
    ShareSample,
    Span,
    Timeline,
    TrafficSample,
    paused_spans,
)

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def story() -> Timeline:
    """A run like the demo's: v1 learns, bots, a pause, v2 ramps, a rollback."""
    timeline = Timeline(started=T0, ended=at(240))
    for i, s in enumerate(range(60, 200, 10)):
        timeline.checkpoints.append(
            CheckpointPoint(at(s), 1, f"v1-{i}", 1000 * i, 0.25 - i * 0.005, 0.24 - i * 0.005)
        )
    for i, s in enumerate(range(110, 240, 10)):
        timeline.checkpoints.append(
            CheckpointPoint(at(s), 2, f"v2-{i}", 3000 * i, 0.23 - i * 0.004, None)
        )
    for s in range(240):
        v2 = 0.0 if s < 120 else min(100.0, [1, 5, 25, 50, 100][min((s - 120) // 15, 4)])
        v2 = 0.0 if s >= 200 else v2
        shares = {"fallback": 100.0} if s < 60 else {"v1": 100.0 - v2, "v2": v2}
        timeline.shares.append(ShareSample(at(s), shares))
        bots = 500.0 if 80 <= s < 100 else 0.0
        timeline.traffic.append(TrafficSample(at(s), 100.0, bots))
    timeline.paused.extend(
        paused_spans([(at(85), "pause"), (at(105), "resume"), (at(140), "pause")], at(150))
    )
    timeline.anomalous.append(Span(at(75), at(105), "bot burst"))
    timeline.marks.extend([Mark(at(110), "v2 deployed"), Mark(at(200), "rollback to v1")])
    return timeline


def test_paused_spans_pair_each_pause_with_the_next_resume() -> None:
    changes = [(at(1), "resume"), (at(2), "pause"), (at(3), "pause"), (at(5), "resume")]
    changes.append((at(8), "pause"))
    spans = paused_spans(changes, at(10))
    assert [(s.start, s.end) for s in spans] == [(at(2), at(5)), (at(8), at(10))]


def test_versions_come_in_version_order_with_the_fallback_last() -> None:
    assert story().versions() == ["v1", "v2", "fallback"]


def span_extents(ax: Axes, colour: str) -> list[tuple[float, float]]:
    """The data-x extents of the patches of ``colour`` drawn across ``ax``."""
    found = []
    for patch in ax.patches:
        if to_hex(patch.get_facecolor(), keep_alpha=False) != colour:
            continue
        (x0, _), (x1, _) = ax.transData.inverted().transform(patch.get_extents().get_points())
        found.append((round(x0, 3), round(x1, 3)))
    return found


def test_paused_spans_are_shaded_and_the_anomalous_window_hatched_on_every_panel() -> None:
    fig = figure(story())
    axes = fig.get_axes()
    assert len(axes) == 3
    for ax in axes:
        assert span_extents(ax, PAUSED_COLOUR) == [(85.0, 105.0), (140.0, 150.0)]
        hatched = [p for p in ax.patches if p.get_hatch() == "//"]
        assert len(hatched) == 1
        assert to_hex(hatched[0].get_edgecolor(), keep_alpha=False) == ANOMALOUS_COLOUR
        marks = [
            np.asarray(line.get_xdata(), dtype=float)[0]
            for line in ax.lines
            if line.get_linestyle() == ":"
        ]
        assert sorted(round(x) for x in marks) == [110, 200]


def legend_texts(ax: Axes) -> set[str]:
    legend = ax.get_legend()
    assert legend is not None
    return {text.get_text() for text in legend.get_texts()}


def test_every_version_has_its_metric_and_share() -> None:
    top, middle, _ = figure(story()).get_axes()
    assert legend_texts(top) == {"v1 holdout", "v1 progressive", "v2 progressive"}
    assert legend_texts(middle) == {"v1 serving", "v2 serving", "fallback"}


def test_the_plot_is_written_as_a_png(tmp_path: Path) -> None:
    path = plot(story(), tmp_path / "plots" / "demo.png")
    height, width = imread(path).shape[:2]
    assert (width, height) == (1210, 990)


def test_an_empty_timeline_still_plots(tmp_path: Path) -> None:
    path = plot(Timeline(started=T0), tmp_path / "empty.png")
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("field", ["paused", "anomalous"])
def test_spans_outside_the_run_do_not_break_the_plot(tmp_path: Path, field: str) -> None:
    timeline = story()
    getattr(timeline, field).append(Span(at(-30), at(300)))
    assert plot(timeline, tmp_path / "wide.png").exists()
