"""Faults injected into real worker processes; each test asserts what the ledger counted.

See ``tests/faults/harness.py`` for the counts and ``tests/faults/scenarios.py`` for
each scenario; ``bench/faults.py`` runs the same scenarios longer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.settings import Settings
from tests.faults import scenarios
from tests.faults.harness import Figures

pytestmark = pytest.mark.integration


def clean(f: Figures) -> None:
    """Nothing lost, emitted twice or learned twice; every worker up; the books agree."""
    assert (f.lost, f.emitted_twice, f.learned_twice) == (0, 0, 0), str(f.row())
    assert f.notes["workers_down"] == [], str(f.row())
    assert f.notes["false_balance"] == 0, str(f.row())
    assert "publish_errors" not in f.notes, str(f.row())
    assert "checkpoint_timeout" not in f.notes, str(f.row())
    # Asked while the fault held records up, the books answered, and in time.
    assert all(p["seconds"] < 30 for p in f.notes.get("books_during_fault", [])), str(f.row())


def test_streams_worker_killed_repeatedly(settings: Settings, tmp_path: Path) -> None:
    f = scenarios.kill_streams(settings, tmp_path, events=3000, kills=3)
    assert f.notes["kills"] >= 2, str(f.row())
    clean(f)
    assert f.notes["examples"] == 3000 and f.notes["books_balance"], str(f.row())


def test_redis_hung_then_killed(settings: Settings, tmp_path: Path) -> None:
    f = scenarios.redis_faults(settings, tmp_path, events=2000, hung_s=8.0)
    clean(f)
    assert f.notes["examples_during_hang"] > 0, str(f.row())
    # A trainer may stop when its lease went with Redis; compose restarts it.
    assert set(f.notes["restarts"]) <= {"trainer"}, str(f.row())


def test_broker_unreachable(settings: Settings, tmp_path: Path) -> None:
    f = scenarios.broker_cut(settings, tmp_path, events=2000, cut_s=12.0)
    clean(f)
    assert f.notes["books_balance"], str(f.row())


def test_poison_on_every_topic(settings: Settings, tmp_path: Path) -> None:
    f = scenarios.poison(settings, tmp_path, per_topic=60, good=500)
    clean(f)
    assert f.notes["poison_unaccounted"] == 0, str(f.row())


def test_backfill_published_again_is_not_learned_twice(settings: Settings, tmp_path: Path) -> None:
    f = scenarios.backfill_again(settings, tmp_path, events=1000)
    clean(f)


def test_second_trainer_for_a_model_refuses(settings: Settings, tmp_path: Path) -> None:
    f = scenarios.two_trainers(settings, tmp_path, events=1500)
    assert f.notes["second_refused"], str(f.row())
    clean(f)


def test_labeller_clock_ahead_keeps_real_labels(settings: Settings, tmp_path: Path) -> None:
    f = scenarios.clock_ahead(settings, tmp_path, events=1000, ahead_s=60)
    assert f.notes["labels_defaulted"] == 0, str(f.row())
    clean(f)


def test_streams_worker_stopped_past_session_timeout(settings: Settings, tmp_path: Path) -> None:
    """A zombie (SIGSTOP 9 s, past the 6 s session timeout) is fenced when it resumes."""
    f = scenarios.pause_streams(settings, tmp_path, events=2000, paused_s=9.0)
    clean(f)
    assert f.notes["books_balance"], str(f.row())


def test_broker_restarted_empty_is_reported_and_read_again(
    settings: Settings, tmp_path: Path
) -> None:
    f = scenarios.broker_restarted_empty(settings, tmp_path, events=500)
    assert not f.notes["books_balance_when_empty"], str(f.row())
    clean(f)
