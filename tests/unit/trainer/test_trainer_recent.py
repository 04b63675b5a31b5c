from __future__ import annotations

from dataclasses import dataclass

import orjson

from loopline.holdout import DEVELOPMENT_KEY
from loopline.spec import DEFAULT_SPEC, load_spec
from loopline.windows import ExcludedWindows
from tests.unit.trainer.trainer_data import T0, make_examples
from trainer.batch import learn_batch
from trainer.learner import Learner, dedup_horizon
from trainer.recent import RecentEvents

YARN = load_spec(DEFAULT_SPEC)
HOUR = 3600.0
START = T0.timestamp()


@dataclass
class Record:
    """The part of a confluent-kafka Message that ``learn_batch`` reads."""

    value_: bytes
    partition_: int
    offset_: int

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def value(self) -> bytes:
        return self.value_

    def topic(self) -> str:
        return "examples"


def test_ids_are_kept_for_at_least_the_horizon_then_forgotten() -> None:
    recent = RecentEvents(horizon=HOUR)
    for minute in range(0, 180):
        assert recent.admit(f"e{minute}", START + minute * 60, 0)
    newest = START + 179 * 60
    kept = [m for m in range(180) if f"e{m}" in recent]
    assert all(f"e{m}" in recent for m in range(180) if START + m * 60 >= newest - HOUR)
    assert len(kept) < 70  # the rest were forgotten, within one bucket of the horizon
    assert not recent.admit("e179", newest, 0)
    assert not recent.admit(f"e{kept[0]}", newest, 0)


def test_a_lagging_partition_keeps_its_own_ids() -> None:
    recent = RecentEvents(horizon=HOUR)
    recent.admit("slow", START, 1)
    for minute in range(0, 600, 10):
        recent.admit(f"fast{minute}", START + minute * 60, 0)
    assert "slow" in recent
    assert not recent.admit("slow", START, 1)
    assert "fast0" not in recent


def test_state_survives_json_and_forgets_the_same() -> None:
    recent = RecentEvents(horizon=HOUR)
    for minute in range(0, 120):
        recent.admit(f"e{minute}", START + minute * 60, minute % 3)
    raw = orjson.dumps(recent.state(), option=orjson.OPT_NON_STR_KEYS)
    loaded = RecentEvents.load(orjson.loads(raw), HOUR)
    assert len(loaded) == len(recent)
    assert all((f"e{m}" in loaded) == (f"e{m}" in recent) for m in range(120))
    for minute in range(120, 240):
        assert loaded.admit(f"e{minute}", START + minute * 60, minute % 3)
        recent.admit(f"e{minute}", START + minute * 60, minute % 3)
    assert loaded.state() == recent.state()


def test_horizon_covers_what_validation_accepts() -> None:
    validation = YARN.validation
    assert dedup_horizon(YARN) == validation.max_age_seconds + validation.max_future_seconds


def test_duplicates_at_new_offsets_are_counted_not_learned() -> None:
    examples = make_examples(YARN, 200)
    learner = Learner(YARN, YARN.build_model(), ExcludedWindows(), holdout_key=DEVELOPMENT_KEY)
    records = [Record(ex.to_json(), 0, i) for i, ex in enumerate(examples)]
    again = [Record(ex.to_json(), 0, 200 + i) for i, ex in enumerate(examples)]
    position: dict[int, int] = {}
    assert learn_batch(learner, records, position) == 200
    counts = learner.counts.as_dict()
    assert counts["learned"] + counts["holdout"] == 200
    # a redelivery of handled offsets is no new record; the same events anew are duplicates
    assert learn_batch(learner, records[:50], position) == 0
    assert learn_batch(learner, again, position) == 200
    assert position == {0: 400}
    after = learner.counts.as_dict()
    assert after == {**counts, "duplicates": 200}
