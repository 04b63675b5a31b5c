"""The demo's closing table: what each part of the loop did, and whether the books balance."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from rich.table import Table

from loopline.accounting import EVENT_OUTCOMES, LABEL_OUTCOMES, Accounting
from loopline.contracts import CommandKind
from ops.demo_operator import OPERATOR
from ops.demo_probe import Answer
from ops.demo_watch import Watch
from ops.simulator import TrafficReport


@dataclass(frozen=True, slots=True)
class Ending:
    """How the story ended, as the demo saw it."""

    traffic: TrafficReport
    books: Accounting
    feature_rows: int | None
    rollback: str  # what the rollback did, or why there was none
    rollback_target: str | None
    answers: Counter[str]  # who answered the last sampled shoppers (ops.demo_probe)
    final: Answer  # one last question to serving
    plot: str


def _at(started: datetime, at: datetime) -> str:
    return f"+{(at - started).total_seconds():.0f}s"


def _outcomes(books: Accounting, names: tuple[str, ...]) -> str:
    return ", ".join(f"{name.removeprefix('labels_')} {books.get(name):,}" for name in names)


def _checkpoints(watch: Watch) -> dict[str, str]:
    rows: dict[str, str] = {}
    versions = sorted({f"v{m.spec_version}" for m in watch.manifests.values()})
    for version in versions:
        ids = [c for c, m in watch.manifests.items() if f"v{m.spec_version}" == version]
        verdicts = Counter(
            "not judged"
            if watch.verdicts.get(c, {}).get("action") == "not judged"
            else str(watch.verdicts.get(c, {}).get("verdict", "waiting"))
            for c in ids
        )
        reasons = Counter(
            str(r).split(":", 1)[0]
            for c in ids
            if watch.verdicts.get(c, {}).get("verdict") == "refused"
            and watch.verdicts[c].get("action") != "not judged"
            for r in watch.verdicts[c].get("reasons", ())
        )
        why = f" ({', '.join(f'{k} {n}' for k, n in reasons.items())})" if reasons else ""
        rows[f"checkpoints of {version}"] = (
            f"{len(ids)} written: {verdicts.get('qualified', 0)} qualified, "
            f"{verdicts.get('refused', 0)} refused{why}, {verdicts.get('not judged', 0)} "
            f"superseded before judging, {verdicts.get('waiting', 0)} waiting"
        )
    return rows


def _champions(watch: Watch, started: datetime) -> str:
    """Champions of one version in a row as one span: ``v1 from +51s (… v1·fca46c)``."""
    spans: list[tuple[str, datetime, str]] = []  # version, since, its last champion
    for at, cid in watch.champions:
        version = watch.version(cid)
        if spans and spans[-1][0] == version:
            spans[-1] = (version, spans[-1][1], cid)
        else:
            spans.append((version, at, cid))
    return (
        " → ".join(f"{v} from {_at(started, at)} (last {watch.name(c)})" for v, at, c in spans)
        or "none"
    )


def summary_table(watch: Watch, ending: Ending, started: datetime) -> Table:
    table = Table(title="what the loop did", show_header=False, show_lines=False)
    table.add_column(style="bold")
    table.add_column()
    report, books = ending.traffic, ending.books
    row = table.add_row
    row(
        "the shop published",
        f"{report.events:,} events ({report.bot_events:,} from bots), {report.clicks:,} clicks "
        f"({report.late_clicks:,} after the horizon), {report.broken:,} broken records",
    )
    row(
        "events read by the streams", f"{books.get('events'):,}: {_outcomes(books, EVENT_OUTCOMES)}"
    )
    rejected = ", ".join(f"{reason} {n:,}" for reason, n in books.rejected.items())
    row("deadlettered, by reason", rejected or "none")
    row("labels read", f"{books.get('labels'):,}: {_outcomes(books, LABEL_OUTCOMES)}")
    row(
        "examples",
        f"{books.get('examples_labelled'):,} with their click, {books.get('examples_defaulted'):,} "
        "defaulted to no click after the horizon",
    )
    rows = ending.feature_rows
    row("feature rows written", "unknown" if rows is None else f"{rows:,} to the online store")
    pauses = [c for c in watch.commands if c.kind is CommandKind.PAUSE and c.issued_by != OPERATOR]
    row(
        "auto-pauses",
        ", ".join(f"{_at(started, c.issued_at)} by {c.issued_by} ({c.reason})" for c in pauses)
        or "none",
    )
    excluded = max((m.examples_excluded for m in watch.manifests.values()), default=0)
    windows = ", ".join(
        f"{_at(started, s.start)} to {_at(started, s.end)} ({s.label})"
        for s in watch.timeline.anomalous
    )
    row(
        "anomalous windows",
        f"{windows}: {excluded:,} examples never learned" if windows else "none",
    )
    for name, text in _checkpoints(watch).items():
        row(name, text)
    row("champions", _champions(watch, started))
    stages = "; ".join(
        f"{version}: {' → '.join(f'{p:g}%' for p in percents)}"
        for version, percents in watch.stages.items()
    )
    ramp = watch.ramp
    outcome = f", {ramp.status.value}" if ramp is not None else ""
    row("ramp stages reached", f"{stages}{outcome}" if stages else "no ramp")
    row("rollback", ending.rollback)
    answered = ", ".join(f"{n} by {watch.name(cid)}" for cid, n in ending.answers.most_common())
    target = ending.rollback_target
    if target is not None and set(ending.answers) == {target}:
        answered += " (the rollback target)"
    final = ending.final
    last = (
        f"p(click) {final.score:.3f} for user-1 from {watch.name(final.source)}"
        if final.score is not None
        else f"user-1: {final.problem}"
    )
    row("serving now answers", f"{last}; {sum(ending.answers.values())} shoppers asked: {answered}")
    balanced = books.events_balance == 0 and books.labels_balance == 0
    row(
        "books balance",
        "yes: every event is an example, deadlettered, a duplicate, pending or dropped"
        if balanced
        else f"no: events {books.events_balance:+d}, labels {books.labels_balance:+d}",
    )
    row("plot", ending.plot)
    return table
