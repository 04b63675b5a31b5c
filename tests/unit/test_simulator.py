from __future__ import annotations

import random
from datetime import UTC, datetime
from statistics import mean

from loopline.contracts import Event
from loopline.errors import RecordError
from loopline.spec import DEFAULT_SPEC, load_spec
from loopline.validation import FeatureValidator
from ops.simulator import YarnShop, broken_record

SPEC = load_spec(DEFAULT_SPEC)


def test_impressions_are_valid_for_the_shipped_spec() -> None:
    shop, validator = YarnShop(seed=3), FeatureValidator(SPEC)
    for i in range(2000):
        imp = shop.impression(progress=i / 2000)
        validator.validate(imp.features, impute=True)


def test_click_rate_is_realistic_and_drifts_towards_alpaca() -> None:
    early, late = YarnShop(seed=5), YarnShop(seed=5)
    before = [
        i.click_probability
        for i in (early.impression(0.0) for _ in range(5000))
        if i.features.get("category") == "alpaca"
    ]
    after = [
        i.click_probability
        for i in (late.impression(1.0) for _ in range(5000))
        if i.features.get("category") == "alpaca"
    ]
    shop = YarnShop(seed=9)
    overall = mean(shop.impression(0.5).clicked for _ in range(5000))
    assert 0.01 < overall < 0.2
    assert mean(after) > 2 * mean(before)


def test_bots_never_click() -> None:
    shop = YarnShop(seed=2)
    bots = [shop.impression(0.5, bot=True) for _ in range(500)]
    assert not any(b.clicked for b in bots)
    assert all(b.entity_id.startswith("bot-") for b in bots)
    assert len({b.entity_id for b in bots}) <= len(shop.bots)


def test_broken_records_are_all_rejected() -> None:
    rng, validator, now = random.Random(1), FeatureValidator(SPEC), datetime.now(UTC)
    for _ in range(200):
        raw = broken_record(rng, now)
        try:
            event = Event.from_json(raw)
            validator.check_time(event.ts, now)
            validator.validate(event.features)
        except RecordError:
            continue
        raise AssertionError(f"accepted a broken record: {raw!r}")
