"""An abrupt concept switch: with the shipped qualification defaults, the checkpoint that
learned the new concept replaces the champion that knows only the old one.

The shop's clicks first come from mobile shoppers, then, from one event on, from
desktop shoppers (the click rate stays the same). One model keeps learning across the
switch; the champion stopped before it. Both are judged as the pusher judges them, on
the recent settled holdout; on the whole holdout history instead (the old behaviour)
the new-concept checkpoint stays refused.
"""

from __future__ import annotations

import copy
import math
import random
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

from loopline.contracts import Example
from loopline.holdout import DEVELOPMENT_KEY, Holdout
from loopline.spec import DEFAULT_SPEC, HOLDOUT_CAPACITY, Spec, load_spec, parse_spec
from pusher.qualify import qualify
from pusher.recent import select
from tests.unit.pusher.pusher_support import manifest, request_features, train

T0 = datetime(2026, 2, 1, tzinfo=UTC)
BEFORE = 20_000  # events of the old concept
STEP = 500  # events between two checkpoints after the switch


def stream(n: int, start: int, concept: str, seed: int) -> list[Example]:
    """``n`` events one second apart from event number ``start``; clicks come from
    ``concept`` shoppers (mobile or desktop)."""
    rng = random.Random(seed)
    rows = []
    for i in range(start, start + n):
        features = request_features(rng) | {
            "click_rate_24h": 0.1,
            "impressions_1h": rng.randrange(20),
            "seconds_since_last": rng.randrange(3600),
        }
        logit = -2.5 + 3.0 * (features["device"] == concept)
        label = float(rng.random() < 1 / (1 + math.exp(-logit)))
        rows.append(Example(f"ev-{i}", "u", T0 + timedelta(seconds=i), features, label))
    return rows


def split(spec: Spec, rows: list[Example]) -> tuple[list[Example], list[Example]]:
    holdout = Holdout(spec.training.holdout_fraction, DEVELOPMENT_KEY)
    learned = [r for r in rows if r.event_id not in holdout]
    held = [r for r in rows if r.event_id in holdout]
    return learned, held


def whole_history(spec: Spec) -> Spec:
    data: dict[str, Any] = tomllib.loads(DEFAULT_SPEC.read_text())
    data["qualification"] |= {"window_seconds": 10 * 365 * 86400}
    data["qualification"] |= {"window_examples": HOLDOUT_CAPACITY}
    return parse_spec(data)


def test_the_checkpoint_that_learned_the_new_concept_replaces_the_old_champion() -> None:
    spec = load_spec(DEFAULT_SPEC)
    learned, holdout = split(spec, stream(BEFORE, 0, "mobile", seed=1))
    challenger = train(spec, learned)
    champion = copy.deepcopy(challenger)  # the model as it was at the switch
    accepted_after = None
    whole = whole_history(spec)
    for step in range(1, 13):
        new_learned, new_holdout = split(
            spec, stream(STEP, BEFORE + (step - 1) * STEP, "desktop", seed=step + 1)
        )
        train(spec, new_learned, challenger)
        holdout += new_holdout
        # Judged one horizon after the checkpoint's last event: its holdout has settled.
        now = holdout[-1].ts + timedelta(seconds=spec.label.horizon_seconds)
        checkpoint = manifest(spec, f"ck-{step}", examples_seen=len(learned) + step * STEP)
        verdict = qualify(spec, checkpoint, challenger, select(spec, holdout, now), champion)
        if verdict.qualified and accepted_after is None:
            accepted_after = step * STEP
            history = qualify(whole, checkpoint, challenger, select(whole, holdout, now), champion)
            assert not history.qualified
            assert [r.split(":")[0] for r in history.reasons] == ["metric"]
    # Within the events it takes the holdout to hold half a recent window of the new
    # concept, plus one checkpoint.
    q = spec.qualification
    bound = q.window_examples / 2 / spec.training.holdout_fraction + STEP
    assert accepted_after is not None, "the new-concept checkpoint was never accepted"
    assert accepted_after <= bound, (accepted_after, bound)
    print(f"accepted {accepted_after} events after the switch (bound {bound:g})")


def test_without_a_switch_the_fresher_checkpoint_is_accepted_too() -> None:
    spec = load_spec(DEFAULT_SPEC)
    learned, holdout = split(spec, stream(8000, 0, "mobile", seed=9))
    champion = train(spec, learned[:4000])
    fresher = train(spec, learned)
    now = holdout[-1].ts + timedelta(seconds=spec.label.horizon_seconds)
    verdict = qualify(spec, manifest(spec, "ck"), fresher, select(spec, holdout, now), champion)
    assert verdict.qualified, verdict.reasons
