from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from river import metrics as river_metrics

from trainer.metrics import METRICS, ROCAUC, ProgressiveMetrics, check_names

T = datetime(2026, 1, 1, tzinfo=UTC)


def stream(n: int = 500, seed: int = 0) -> list[tuple[bool, float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = rng.random() < 0.3
        p = min(max(rng.gauss(0.6 if y else 0.35, 0.2), 0.0), 1.0)
        out.append((y, p))
    return out


@pytest.mark.parametrize(
    ("name", "river"),
    [("log_loss", river_metrics.LogLoss), ("accuracy", river_metrics.Accuracy)],
)
def test_classification_metrics_equal_rivers(name: str, river: type) -> None:
    ours, theirs = METRICS[name](), river()
    for y, p in stream():
        ours.update(y, p)
        theirs.update(y, p if name == "log_loss" else p > 0.5)
    assert ours.value() == pytest.approx(theirs.get(), abs=1e-12)


@pytest.mark.parametrize(
    ("name", "river"), [("mae", river_metrics.MAE), ("rmse", river_metrics.RMSE)]
)
def test_regression_metrics_equal_rivers(name: str, river: type) -> None:
    rng = random.Random(1)
    ours, theirs = METRICS[name](), river()
    for _ in range(300):
        y, p = rng.uniform(0, 50), rng.uniform(0, 50)
        ours.update(y, p)
        theirs.update(y, p)
    assert ours.value() == pytest.approx(theirs.get(), rel=1e-9)


def test_roc_auc_is_exact_for_distinct_bins() -> None:
    data = stream(400, seed=3)
    data = [(y, round(p, 3)) for y, p in data]
    auc = ROCAUC()
    for y, p in data:
        auc.update(y, p)
    pos = [p for y, p in data if y]
    neg = [p for y, p in data if not y]
    pairs = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    assert auc.value() == pytest.approx(pairs / (len(pos) * len(neg)), abs=2e-3)


def test_empty_metrics_have_no_value() -> None:
    assert all(cls().value() is None for cls in METRICS.values())
    auc = ROCAUC()
    auc.update(True, 0.9)
    assert auc.value() is None


def test_state_round_trip_resumes_exactly() -> None:
    names = ("log_loss", "roc_auc", "accuracy")
    whole, first = ProgressiveMetrics(names, 60), ProgressiveMetrics(names, 60)
    data = stream(200)
    for i, (y, p) in enumerate(data):
        whole.update(T + timedelta(seconds=i * 7), y, p)
        if i < 120:
            first.update(T + timedelta(seconds=i * 7), y, p)
    second = ProgressiveMetrics(names, 60)
    second.load(first.state())
    for i, (y, p) in enumerate(data[120:], start=120):
        second.update(T + timedelta(seconds=i * 7), y, p)
    assert second.values() == whole.values()


def test_windows_are_bounded_and_keyed_by_start() -> None:
    metrics = ProgressiveMetrics(("accuracy",), 3600, max_windows=3)
    for hour in range(5):
        metrics.update(T + timedelta(hours=hour, minutes=5), True, 0.9)
    keys = [k for k in metrics.values() if "@" in k]
    assert keys == [f"accuracy@{(T + timedelta(hours=h)).isoformat()}" for h in (2, 3, 4)]
    latest = metrics.latest_window()
    assert latest is not None and latest[0] == T + timedelta(hours=4)


def test_metric_names_must_suit_the_label() -> None:
    check_names(("log_loss", "roc_auc"), "binary")
    check_names(("mae",), "regression")
    with pytest.raises(ValueError, match="does not apply"):
        check_names(("mae",), "binary")
    with pytest.raises(ValueError, match="does not apply"):
        check_names(("f1",), "binary")
