"""``loopline status``: the state of the whole loop, gathered from where each part keeps it.

Control (paused or not, anomalous windows) is folded from the ``control`` topic, and
records there that hold no command are counted (``control_unreadable``), as are
Commands not signed by an operator key the readers hold (``control_refused``); what
serves and the ramp come from the routing state in Redis; the newest checkpoint from
the checkpoint store; lag from the consumer groups' committed offsets; accounting and
workers' heartbeats (data-health verdict included) from Redis. A part that cannot be
read is reported as an error in its section, so the rest still shows during an outage;
the broker is asked once first, so that an unreachable one costs seconds, not a
timeout per section.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import redis

from loopline import accounting, heartbeat
from loopline.checkpoints import CheckpointStore
from loopline.contracts import utcnow
from loopline.control import read_log
from loopline.control_state import ControlState
from loopline.errors import LooplineError
from loopline.kafka import group_lag, topic_sizes, wait_for_broker
from loopline.routing import RoutingStore
from loopline.settings import Settings

HEALTH_ORDER = ("breach", "warming up", "healthy")
BROKER_PROBE_SECONDS = 5.0


def consumer_groups(settings: Settings, model: str) -> dict[str, tuple[str, ...]]:
    """Each worker's consumer group and the topics it commits offsets for."""
    prefix = settings.topic_prefix
    return {
        f"{prefix}streams": ("events", "labels"),
        f"{prefix}trainer.{model}": ("examples",),
        f"{prefix}pusher": ("checkpoints",),
    }


def _section(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except (LooplineError, redis.RedisError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def collect(settings: Settings) -> dict[str, Any]:
    spec = settings.load_spec()
    workers = _section(lambda: heartbeat.read(settings))
    down = _section(partial(wait_for_broker, settings, BROKER_PROBE_SECONDS))

    def via_broker(read: Callable[[], Any]) -> Any:
        return down if down is not None else _section(read)

    return {
        "at": utcnow(),
        "model": spec.name,
        "spec_version": spec.spec_version,
        "training": via_broker(lambda: _training(settings, spec.name, workers)),
        "serving": _section(lambda: _serving(settings)),
        "newest_checkpoint": _section(lambda: _newest_checkpoint(settings, spec.name)),
        "lag": {
            group: via_broker(partial(group_lag, settings, group, topics))
            for group, topics in consumer_groups(settings, spec.name).items()
        },
        "accounting": via_broker(lambda: _accounting(settings)),
        "data_health": _health(workers),
        "workers": _workers(workers),
    }


def _training(
    settings: Settings, model: str, workers: list[heartbeat.WorkerStatus] | dict[str, str]
) -> dict[str, Any]:
    control = read_log(settings)
    state = ControlState.fold(control.commands, model)
    pause = state.pause
    trainer = next(
        (
            w
            for w in workers
            if isinstance(w, heartbeat.WorkerStatus) and w.name == f"trainer.{model}"
        ),
        None,
    )
    return {
        "paused": state.paused,
        "paused_since": pause.issued_at if pause else None,
        "paused_by": pause.issued_by if pause else None,
        "pause_reason": pause.reason if pause else None,
        "pause_evidence": pause.evidence if pause else None,
        "trainer_paused": trainer.state.get("paused") if trainer else None,
        "control_unreadable": control.unreadable,
        "control_refused": len(control.refused),
        "anomalous_windows": [
            {
                "id": m.mark_id,
                "start": m.window.start,
                "end": m.window.end,
                "reason": m.reason,
                "by": m.by,
            }
            for m in state.marks.values()
        ],
    }


def _serving(settings: Settings) -> dict[str, Any]:
    store = RoutingStore(settings)
    try:
        table, ramp, kill, pinned = store.table(), store.ramp(), store.kill_switch(), store.pinned()
    finally:
        store.close()
    ramp_view = None
    if ramp is not None:
        ramp_view = {
            "candidate": ramp.candidate,
            "baseline": ramp.baseline,
            "status": str(ramp.status),
            "stage": ramp.stage + 1,
            "stages": len(ramp.stages),
            "percent": ramp.percent,
            "reason": ramp.reason,
        }
    return {
        "routing_version": table.version,
        "champion": table.champion,
        "routes": {r.checkpoint_id: r.percent for r in table.routes},
        "ramp": ramp_view,
        "kill_switch": kill.on,
        "kill_switch_reason": kill.reason or None,
        "pinned": pinned,
    }


def _newest_checkpoint(settings: Settings, model: str) -> dict[str, Any] | None:
    manifests = CheckpointStore.of(settings).manifests(model)
    if not manifests:
        return None
    newest = max(manifests, key=lambda m: m.created_at)
    return {
        "id": newest.checkpoint_id,
        "spec_version": newest.spec_version,
        "lineage": newest.lineage,
        "created_at": newest.created_at,
        "age_seconds": round((utcnow() - newest.created_at).total_seconds(), 1),
        "examples_seen": newest.examples_seen,
    }


def _accounting(settings: Settings) -> dict[str, Any]:
    books = accounting.read(settings)
    published = topic_sizes(settings, ("events", "labels"))
    return {
        "published": published.get("events", 0),
        "read": books.get("events"),
        **{name: books.get(name) for name in accounting.EVENT_OUTCOMES},
        "labels_published": published.get("labels", 0),
        "labels_read": books.get("labels"),
        "balanced": books.events_balance == 0 and books.labels_balance == 0,
        "unread": published.get("events", 0) - books.get("events"),
        "problems": books.problems(published.get("events", 0)),
        "rejected": dict(books.rejected),
    }


def _health(workers: list[heartbeat.WorkerStatus] | dict[str, str]) -> dict[str, Any]:
    if isinstance(workers, dict):
        return workers
    reports = [
        w for w in workers if w.name.startswith("streams.") and w.age() < heartbeat.STALE_SECONDS
    ]
    if not reports:
        return {"verdict": "unknown (no streams worker reporting)", "breaches": []}
    verdicts = [str(w.state.get("health", "unknown")) for w in reports]
    worst = min(verdicts, key=lambda v: HEALTH_ORDER.index(v) if v in HEALTH_ORDER else -1)
    breaches = []
    for w in reports:  # heartbeats are JSON anyone could write: take only what has the shape
        window = w.state.get("last_window")
        found = window.get("breaches") if isinstance(window, dict) else None
        breaches += [b for b in found if isinstance(b, dict)] if isinstance(found, list) else []
    return {"verdict": worst, "breaches": breaches, "workers": len(reports)}


def _workers(workers: list[heartbeat.WorkerStatus] | dict[str, str]) -> Any:
    if isinstance(workers, dict):
        return workers
    return [
        {
            "name": w.name,
            "last_beat_seconds": round(w.age(), 1),
            "stale": w.age() >= heartbeat.STALE_SECONDS,
            "degraded": w.state.get("degraded"),
        }
        for w in workers
    ]
