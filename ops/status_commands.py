"""Read-only operator views: ``status``, ``history``, ``deadletter tail``."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loopline.cli_settings import settings_of
from loopline.errors import RecordError
from loopline.kafka import Record, read_tail
from loopline.settings import Settings
from ops import history as timeline
from ops import status as loop_status

app = typer.Typer()
deadletter_app = typer.Typer(help="Records the streams rejected, with why.")
app.add_typer(deadletter_app, name="deadletter")
console = Console()
errors = Console(stderr=True)

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

#: How far back ``deadletter tail --reason`` searches by default, per partition.
SCAN_LIMIT = 200_000


def _json(value: Any) -> None:
    console.out(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode(), highlight=False)


@app.command()
def status(ctx: typer.Context, as_json: Json = False) -> None:
    """The loop at a glance: training, serving, checkpoints, lag, accounting, data health."""
    report = loop_status.collect(settings_of(ctx))
    if as_json:
        _json(report)
        return
    _render_status(report)


def _rows(title: str, rows: dict[str, Any]) -> None:
    """A two-column table. Values are shown as they are, never read as markup (they come
    from records and keys anyone could write); styled values come as :class:`Text`."""
    table = Table(title=escape(title), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(Text(key), value if isinstance(value, Text) else Text(_cell(value)))
    console.print(table)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _when(ts: Any) -> str:
    return ts.isoformat(timespec="seconds") if isinstance(ts, datetime) else str(ts)


def _render_status(r: dict[str, Any]) -> None:
    t = r["training"]
    if "error" in t:
        _rows("training", t)
    else:
        state = Text("PAUSED", "red") if t["paused"] else Text("learning", "green")
        rows: dict[str, Any] = {"state": state}
        if t["paused"]:
            rows["paused"] = f"since {_when(t['paused_since'])} by {t['paused_by']}"
            rows["why"] = t["pause_reason"] or "-"
        if t["trainer_paused"] is None:
            rows["trainer"] = Text("not running", "yellow")
        elif bool(t["trainer_paused"]) != t["paused"]:
            rows["trainer"] = Text("not yet applied", "yellow")
        for w in t["anomalous_windows"]:
            rows[f"anomalous {w['id']}"] = (
                f"[{_when(w['start'])}, {_when(w['end'])}) by {w['by']}: {w['reason']}"
            )
        skipped = [
            f"{t[key]} {what}"
            for key, what in (
                ("control_unreadable", "unreadable records skipped"),
                ("control_refused", "Commands refused for their signature (`loopline history`)"),
            )
            if t.get(key)
        ]
        if skipped:
            rows["control"] = Text("; ".join(skipped), "yellow")
        _rows(f"training of {r['model']} v{r['spec_version']}", rows)
    s = r["serving"]
    if "error" in s:
        _rows("serving", s)
    else:
        rows = {
            "champion": s["champion"],
            "routes": ", ".join(f"{c} {p:g}%" for c, p in s["routes"].items()) or "-",
            "routing version": s["routing_version"],
        }
        if s["ramp"]:
            ramp = s["ramp"]
            rows["ramp"] = (
                f"{ramp['candidate']} vs {ramp['baseline']}: {ramp['status']} at stage "
                f"{ramp['stage']}/{ramp['stages']} ({ramp['percent']:g}%)"
            )
        rows["kill switch"] = (
            Text.assemble(("ON", "red"), f" ({s['kill_switch_reason']})")
            if s["kill_switch"]
            else "off"
        )
        rows["pinned"] = s["pinned"]
        _rows("serving", rows)
    c = r["newest_checkpoint"]
    if c is None:
        _rows("newest checkpoint", {"checkpoint": "none yet"})
    elif "error" in c:
        _rows("newest checkpoint", c)
    else:
        _rows(
            "newest checkpoint",
            {
                "id": c["id"],
                "lineage": f"{c['lineage']} (spec v{c['spec_version']})",
                "age": f"{c['age_seconds']:.0f}s (written {_when(c['created_at'])})",
                "examples seen": c["examples_seen"],
            },
        )
    lag = {
        group: topics.get("error") or ", ".join(f"{t} {n}" for t, n in topics.items())
        for group, topics in r["lag"].items()
    }
    _rows("consumer lag (records)", lag)
    a = r["accounting"]
    if "error" in a:
        _rows("accounting", a)
    else:
        rows = {k: v for k, v in a.items() if k not in ("rejected", "balanced", "problems")}
        problems = a.get("problems") or []
        if not a["balanced"]:
            rows["books"] = Text("do not balance", "red")
        elif problems:
            rows["books"] = Text("; ".join(problems), "red")
        elif a.get("unread", 0) > 0:
            rows["books"] = f"balance for what was read ({a['unread']} events not yet read)"
        else:
            rows["books"] = "balance"
        _rows("accounting (events)", rows)
    h = r["data_health"]
    checks = ", ".join(f"{b.get('check')} {b.get('value')}" for b in h.get("breaches", []))
    _rows("data health", {"verdict": h.get("verdict", h.get("error")), "breaches": checks or "-"})
    workers = r["workers"]
    if isinstance(workers, dict):
        _rows("workers", workers)
    else:
        _rows(
            "workers",
            {
                w["name"]: Text.assemble(
                    f"last beat {w['last_beat_seconds']:.0f}s ago",
                    (" (stale)", "red") if w["stale"] else "",
                    (f" degraded: {w['degraded']}", "red") if w.get("degraded") else "",
                )
                for w in workers
            }
            or {"-": "no worker reporting"},
        )


@app.command()
def history(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="From (RFC 3339, or HH:MM today, local time).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Until (same forms).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show the last N entries.")] = 100,
    as_json: Json = False,
) -> None:
    """Why the model changed: checkpoints, verdicts, pushes, ramps, rollbacks, pauses, in time order."""
    try:
        start = timeline.parse_when(since) if since else None
        end = timeline.parse_when(until) if until else None
    except (ValueError, RecordError) as exc:
        raise typer.BadParameter(str(exc)) from None
    found = timeline.collect(settings_of(ctx), start, end)
    entries = found.entries[-limit:]
    if as_json:
        _json([e.as_dict() for e in entries])
    else:
        table = Table(title="history")
        for column in ("at", "kind", "by", "what", "why"):
            table.add_column(column, overflow="fold")
        for e in entries:
            table.add_row(*(Text(v) for v in (_when(e.at), e.kind, e.who, e.what, e.why)))
        console.print(table)
    for caveat in found.caveats:
        errors.print(f"[yellow]incomplete:[/yellow] {escape(caveat)}")
    for source, why in found.unread.items():
        errors.print(f"[red]incomplete:[/red] {escape(source)} not read: {escape(why)}")
    if found.unread:
        raise typer.Exit(1)


@deadletter_app.command("tail")
def deadletter_tail(
    ctx: typer.Context,
    reason: Annotated[
        str | None, typer.Option(help="Only this reason code (e.g. wrong_type).")
    ] = None,
    count: Annotated[int, typer.Option("-n", "--count", min=1, help="How many records.")] = 20,
    scan: Annotated[
        int, typer.Option(min=1, help="With --reason, search at most this many per partition.")
    ] = SCAN_LIMIT,
    as_json: Json = False,
) -> None:
    """The latest rejected records, with reason, detail and where they came from."""
    records, searched, whole = _deadlettered(settings_of(ctx), reason, count, scan)
    if reason is not None and len(records) < count and not whole:
        errors.print(
            f"[yellow]searched the newest {searched} records of each partition only[/yellow] "
            "(--scan to search further)"
        )
    rows = []
    for rec in sorted(records, key=lambda x: x.timestamp_ms):
        h = {k: v.decode(errors="replace") for k, v in rec.headers.items()}
        rows.append(
            {
                "reason": h.get("reason"),
                "detail": h.get("detail"),
                "source": f"{h.get('source_topic')}/{h.get('source_partition')}@{h.get('source_offset')}",
                "key": (rec.key or b"").decode(errors="replace"),
                "value": (rec.value or b"")[:200].decode(errors="replace"),
            }
        )
    rows = rows[-count:]
    if as_json:
        _json(rows)
        return
    table = Table(title=f"deadletter ({len(rows)} shown)")
    for column in ("reason", "detail", "source", "key", "value"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(str(row[c])) for c in ("reason", "detail", "source", "key", "value")))
    console.print(table)


def _deadlettered(
    settings: Settings, reason: str | None, count: int, scan: int
) -> tuple[list[Record], int, bool]:
    """The records with this reason (any with None) among the newest of each partition,
    how many of each were searched, and whether that was each partition whole.

    The reason is in the headers only, so a filtered tail reads backwards in growing
    steps until enough match: never the whole topic at once, at most ``scan`` each.
    """
    step = count if reason is None else min(max(count * 20, 1000), scan)
    while True:
        records = read_tail(settings, "deadletter", step)
        whole = all(n < step for n in Counter(r.partition for r in records).values())
        matching = [
            r for r in records if reason is None or r.headers.get("reason") == reason.encode()
        ]
        if reason is None or len(matching) >= count or whole or step >= scan:
            return matching, step, whole
        step = min(step * 8, scan)
