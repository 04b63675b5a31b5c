from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from loopline.contracts import Label, Prediction
from loopline.routing import RampState
from loopline.spec import DEFAULT_SPEC, Guardrail, Ramp, Spec, load_spec
from pusher.online import BASELINE, CANDIDATE, OnlineMetrics
from pusher.ramp import breach

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def spec() -> Spec:
    guard = Guardrail(metric="log_loss", max_degradation=0.1, min_samples=20)
    base = load_spec(DEFAULT_SPEC)
    return base.model_copy(update={"ramp": Ramp(stages=(50, 100), guardrails=(guard,))})


def pred(
    event_id: str, version: str, score: float, *, at: int = 1, fallback: bool = False
) -> Prediction:
    return Prediction(event_id, "u", version, score, T0 + timedelta(seconds=at), fallback, 2.0)


def label(event_id: str, value: float) -> Label:
    return Label(event_id, "u", T0, value)


def test_predictions_join_labels_whichever_comes_first(spec: Spec) -> None:
    online = OnlineMetrics(spec)
    online.watch("c1", "b1", T0)
    online.prediction(pred("e1", "c1", 0.9))
    online.label(label("e1", 1.0))
    online.label(label("e2", 0.0))
    online.prediction(pred("e2", "b1", 0.2))
    online.prediction(pred("old", "c1", 0.5, at=-5))
    online.prediction(pred("other", "x", 0.5))
    assert list(online.stats[CANDIDATE].labels) == [1.0]
    assert list(online.stats[BASELINE].scores) == [0.2]
    assert online.stats[CANDIDATE].predictions == 1


def test_a_fresher_checkpoint_adds_to_its_roles_evidence(spec: Spec) -> None:
    online = OnlineMetrics(spec)
    online.watch("c1", "b1", T0)
    online.prediction(pred("e1", "c1", 0.9))
    online.watch("c2", "b1", T0)
    online.prediction(pred("e2", "c2", 0.8, fallback=True))
    stats = online.stats[CANDIDATE]
    assert (stats.predictions, stats.errors) == (2, 1)
    online.watch("c3", "b1", T0 + timedelta(hours=1))
    assert online.stats[CANDIDATE].predictions == 0


def test_unlabelled_predictions_take_the_default_label_after_the_horizon(spec: Spec) -> None:
    online = OnlineMetrics(spec)
    online.watch("c1", "b1", T0)
    online.prediction(pred("e1", "c1", 0.3))
    online.expire(T0 + timedelta(seconds=60))
    assert not online.stats[CANDIDATE].labels
    online.expire(T0 + timedelta(seconds=spec.label.horizon_seconds + 60))
    assert list(online.stats[CANDIDATE].labels) == [0.0]


def feed(online: OnlineMetrics, version: str, n: int, score: float, outcome: float) -> None:
    for i in range(n):
        online.prediction(pred(f"{version}-{i}", version, score))
        online.label(label(f"{version}-{i}", outcome))


def test_guardrail_breaks_only_with_enough_evidence(spec: Spec) -> None:
    ramp = RampState("c1", "b1", (50.0, 100.0), 60.0, started_at=T0)
    online = OnlineMetrics(spec)
    online.watch("c1", "b1", T0)
    feed(online, "b1", 30, 0.1, 0.0)
    feed(online, "c1", 19, 0.9, 0.0)
    assert breach(spec, ramp, online) is None
    feed(online, "c1", 1, 0.9, 0.0)
    why = breach(spec, ramp, online)
    assert why is not None and why.startswith("log_loss")


def test_error_rate_breaks_the_guardrail(spec: Spec) -> None:
    ramp = RampState("c1", "b1", (50.0, 100.0), 60.0, started_at=T0)
    online = OnlineMetrics(spec)
    online.watch("c1", "b1", T0)
    for i in range(20):
        online.prediction(pred(f"c-{i}", "c1", 0.1, fallback=i % 2 == 0))
    why = breach(spec, ramp, online)
    assert why is not None and why.startswith("error rate 50.00%")
