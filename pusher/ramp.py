"""Drives a ramp through its stages, and rolls it back the moment a guardrail breaks.

Each :meth:`RampDriver.tick` reads the ramp from Redis (the source of truth, so a
restarted pusher resumes where it was and operators' pauses hold) and then:

- checks the guardrails (also while paused: traffic still flows at the stage):
  the candidate's error rate and latency p99 against the spec's limits, and each
  guardrail metric against the baseline's over the same period once both versions
  have ``min_samples`` labelled predictions. A breach rolls back at once, with why;
- moves on when the stage has dwelled its time: to the next stage, or after the
  last (100%) to promotion, where the candidate becomes the champion.

A stage advances on dwell time alone: a guardrail without enough labels yet cannot
block, it can only roll back once it has the evidence.
"""

from __future__ import annotations

import logging
from datetime import datetime

from loopline.contracts import utcnow
from loopline.routing import RampState, RampStatus, RoutingStore, RoutingTable, serve_only, split
from loopline.spec import Spec
from pusher.evaluation import higher_is_better, worse_by
from pusher.online import BASELINE, CANDIDATE, OnlineMetrics

log = logging.getLogger(__name__)


def breach(spec: Spec, ramp: RampState, online: OnlineMetrics) -> str | None:
    """Why the candidate must roll back, or None."""
    limits = spec.ramp
    cand = online.stats.get(CANDIDATE)
    base = online.stats.get(BASELINE)
    if cand is None or base is None:
        return None
    enough = min((g.min_samples for g in limits.guardrails), default=100)
    if cand.predictions >= enough:
        if cand.error_rate > limits.max_error_rate:
            return f"error rate {cand.error_rate:.2%} > {limits.max_error_rate:.2%} over {cand.predictions} predictions"
        if cand.latency_p99_ms > limits.max_latency_p99_ms:
            return f"latency p99 {cand.latency_p99_ms:.1f} ms > {limits.max_latency_p99_ms:g} ms"
    for guard in limits.guardrails:
        if len(cand.labels) < guard.min_samples or len(base.labels) < guard.min_samples:
            continue
        c, b = cand.metric(guard.metric), base.metric(guard.metric)
        if c is None or b is None:
            continue
        gap = worse_by(c, b, higher_is_better=higher_is_better(guard.metric))
        if gap > guard.max_degradation:
            return (
                f"{guard.metric} {c:.4g} on {len(cand.labels)} labelled predictions is worse than "
                f"the baseline's {b:.4g} by {gap:.4g} > {guard.max_degradation:g}"
            )
    return None


def _same(ramp: RampState | None, seen: RampState) -> bool:
    return (
        ramp is not None
        and ramp.candidate == seen.candidate
        and ramp.started_at == seen.started_at
        and ramp.stage == seen.stage
        and ramp.status == seen.status
    )


class RampDriver:
    def __init__(self, spec: Spec, store: RoutingStore, online: OnlineMetrics) -> None:
        self.spec = spec
        self.store = store
        self.online = online

    def tick(self, now: datetime | None = None) -> str | None:
        """Advance, promote or roll back the ramp if due; returns what was done."""
        now = now or utcnow()
        ramp = self.store.ramp()
        if ramp is None or not ramp.active:
            return None
        self.online.watch(ramp.candidate, ramp.baseline, ramp.started_at)
        self.online.expire(now)
        why = breach(self.spec, ramp, self.online)
        if why is not None:
            return self._roll_back(ramp, f"guardrail: {why}")
        if ramp.status is RampStatus.RAMPING and ramp.dwell(now) >= ramp.dwell_seconds:
            return self._advance(ramp, now)
        return None

    def _roll_back(self, seen: RampState, why: str) -> str | None:
        applied = False

        def change(
            table: RoutingTable, ramp: RampState | None
        ) -> tuple[RoutingTable, RampState] | None:
            nonlocal applied
            applied = _same(ramp, seen)
            if not applied:  # the ramp moved on meanwhile (an operator, another pusher)
                return None
            assert ramp is not None
            moved = ramp.moved(RampStatus.ROLLED_BACK, why)
            return serve_only(table, ramp.baseline, f"rolled back {ramp.candidate}: {why}"), moved

        self.store.update(change, f"roll back {seen.candidate}: {why}")
        if not applied:
            return None
        log.warning("rolled back %s: %s", seen.candidate, why)
        return f"rolled back {seen.candidate}: {why}"

    def _advance(self, seen: RampState, now: datetime) -> str | None:
        def change(
            table: RoutingTable, ramp: RampState | None
        ) -> tuple[RoutingTable, RampState] | None:
            if not _same(ramp, seen):
                return None
            assert ramp is not None
            if ramp.last_stage:
                why = f"promoted after {len(ramp.stages)} stages"
                return serve_only(table, ramp.candidate, why), ramp.moved(
                    RampStatus.PROMOTED, why, now
                )
            nxt = ramp.advanced(f"stage {ramp.stage + 1} dwelled {ramp.dwell(now):.0f}s", now)
            why = f"ramp {ramp.candidate} to {nxt.percent:g}%"
            return split(table, ramp.candidate, ramp.baseline, nxt.percent, why), nxt

        before = self.store.ramp()
        self.store.update(change, f"ramp {seen.candidate} past stage {seen.stage}")
        after = self.store.ramp()
        if after is None or before == after:
            return None
        done = (
            f"promoted {after.candidate}"
            if after.status is RampStatus.PROMOTED
            else f"{after.candidate} at {after.percent:g}%"
        )
        log.info("ramp: %s", done)
        return done


def start(spec: Spec, candidate: str, baseline: str, now: datetime | None = None) -> RampState:
    """A fresh ramp from the spec's stages and dwell time."""
    now = now or utcnow()
    return RampState(
        candidate=candidate,
        baseline=baseline,
        stages=spec.ramp.stages,
        dwell_seconds=spec.ramp.dwell_seconds,
        started_at=now,
        stage_started_at=now,
        updated_at=now,
    )
