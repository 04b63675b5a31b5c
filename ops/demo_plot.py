"""The demo's plot: one PNG telling the run's story on a shared time axis.

- top: the metric of every checkpoint, per model version (holdout solid, progressive
  dashed): the model learning, version 2 catching up;
- middle: the share of entities each version serves (stacked): the ramp, the rollback;
- bottom: the shop's traffic, shoppers and bots per second: the bot burst.

Training pauses are shaded grey on every panel, anomalous windows hatched red, and
deploys, ramp stages and rollbacks drawn as dotted lines.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ops.demo_timeline import Timeline

PAUSED_COLOUR = "#9e9e9e"
ANOMALOUS_COLOUR = "#d62728"
FALLBACK = "fallback"


def _colour(version: str, versions: list[str]) -> str:
    if version == FALLBACK:
        return "#bdbdbd"
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
    return palette[versions.index(version) % len(palette)]


def plot(timeline: Timeline, path: Path) -> Path:
    """Draw ``timeline`` into a PNG at ``path``; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure(timeline).savefig(path, dpi=110)
    return path


def figure(timeline: Timeline) -> Figure:
    """The plot of ``timeline``: three panels sharing the time axis."""
    # A Figure on the Agg canvas, not pyplot: no global state, nothing to close.
    fig = Figure(figsize=(11, 9), layout="constrained")
    FigureCanvasAgg(fig)
    top, middle, bottom = fig.subplots(3, 1, sharex=True, height_ratios=(3, 2, 2))
    versions = [v for v in timeline.versions() if v != FALLBACK]
    _metric(top, timeline, versions)
    _shares(middle, timeline, versions)
    _traffic(bottom, timeline)
    for ax in (top, middle, bottom):
        _shade(ax, timeline)
    _marks(top, middle, bottom, timeline=timeline)
    bottom.set_xlabel("seconds since the demo started")
    end = timeline.ended or max((s.at for s in timeline.shares), default=timeline.started)
    bottom.set_xlim(0, max(timeline.seconds(end), 1.0))
    handles = [
        Patch(facecolor=PAUSED_COLOUR, alpha=0.45, label="training paused"),
        Patch(facecolor="none", edgecolor=ANOMALOUS_COLOUR, hatch="//", label="anomalous window"),
    ]
    fig.legend(handles=handles, loc="outside upper right", ncols=2, frameon=False)
    fig.suptitle("Loopline demo: the yarn shop", x=0.01, ha="left", fontweight="bold")
    return fig


def _metric(ax: Axes, timeline: Timeline, versions: list[str]) -> None:
    for version in versions:
        points = [p for p in timeline.checkpoints if f"v{p.version}" == version]
        colour = _colour(version, versions)
        for attr, style, what in (
            ("holdout", "-", "holdout"),
            ("progressive", "--", "progressive"),
        ):
            xs = [timeline.seconds(p.at) for p in points if getattr(p, attr) is not None]
            ys = [getattr(p, attr) for p in points if getattr(p, attr) is not None]
            if xs:
                ax.plot(
                    xs, ys, style, marker="o", markersize=3, color=colour, label=f"{version} {what}"
                )
    ax.set_ylabel(f"{timeline.metric} per checkpoint")
    if timeline.checkpoints:
        ax.legend(loc="upper right", fontsize="small", ncols=2)
    else:
        ax.text(0.5, 0.5, "no checkpoints", transform=ax.transAxes, ha="center", va="center")


def _shares(ax: Axes, timeline: Timeline, versions: list[str]) -> None:
    names = [*versions, *([FALLBACK] if _has_fallback(timeline) else [])]
    if timeline.shares and names:
        xs = [timeline.seconds(s.at) for s in timeline.shares]
        ys = [[s.shares.get(name, 0.0) for s in timeline.shares] for name in names]
        ax.stackplot(
            xs,
            ys,
            labels=[n if n == FALLBACK else f"{n} serving" for n in names],
            colors=[_colour(n, versions) for n in names],
            step="post",
            alpha=0.85,
        )
        ax.legend(loc="upper left", fontsize="small")
    ax.set_ylim(0, 100)
    ax.set_ylabel("traffic share (%)")


def _has_fallback(timeline: Timeline) -> bool:
    return any(s.shares.get(FALLBACK) for s in timeline.shares)


def _traffic(ax: Axes, timeline: Timeline) -> None:
    xs = [timeline.seconds(s.at) for s in timeline.traffic]
    ax.plot(xs, [s.shoppers for s in timeline.traffic], color="#2ca02c", label="shoppers")
    ax.plot(xs, [s.bots for s in timeline.traffic], color=ANOMALOUS_COLOUR, label="bots")
    ax.set_ylabel("events per second")
    ax.set_ylim(bottom=0)
    if timeline.traffic:
        ax.legend(loc="upper left", fontsize="small")


def _shade(ax: Axes, timeline: Timeline) -> None:
    for span in timeline.paused:
        ax.axvspan(
            timeline.seconds(span.start),
            timeline.seconds(span.end),
            color=PAUSED_COLOUR,
            alpha=0.45,
            linewidth=0,
            zorder=3,  # over the stacked shares too
        )
    for span in timeline.anomalous:
        ax.axvspan(
            timeline.seconds(span.start),
            timeline.seconds(span.end),
            facecolor="none",
            edgecolor=ANOMALOUS_COLOUR,
            hatch="//",
            linewidth=0.8,
            zorder=3,
        )


def _marks(*axes: Axes, timeline: Timeline) -> None:
    for mark in timeline.marks:
        x = timeline.seconds(mark.at)
        for ax in axes:
            ax.axvline(x, color="#444444", linestyle=":", linewidth=0.9)
        axes[0].annotate(  # above the top panel, clear of its curves and legend
            mark.label,
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 3),
            textcoords="offset points",
            rotation=35,
            ha="left",
            va="bottom",
            fontsize="small",
            color="#444444",
        )
