"""The online feature store against the real Redis: guarded writes, TTLs, isolated reads."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta

import redis

from feature_repo.definitions import ttl_seconds
from feature_repo.online import OnlineFeatures
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, parse_spec

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_write_then_read_round_trips(settings: Settings) -> None:
    spec = settings.load_spec()
    store = OnlineFeatures(settings, spec)
    try:
        written = store.write(
            [
                (
                    "u1",
                    {"impressions_1h": 3, "click_rate_24h": 0.25, "seconds_since_last": 12.0},
                    T0,
                ),
                (
                    "u2",
                    {"impressions_1h": 1, "click_rate_24h": None, "seconds_since_last": None},
                    T0,
                ),
            ]
        )
        assert written == 2
        assert store.read(["u1", "u2", "nobody"]) == [
            {"impressions_1h": 3, "click_rate_24h": 0.25, "seconds_since_last": 12.0},
            {"impressions_1h": 1, "click_rate_24h": None, "seconds_since_last": None},
            {"impressions_1h": None, "click_rate_24h": None, "seconds_since_last": None},
        ]
    finally:
        store.close()


def test_stale_rows_never_overwrite_fresher_values(settings: Settings) -> None:
    store = OnlineFeatures(settings, settings.load_spec())
    try:
        fresh = {"impressions_1h": 9, "click_rate_24h": 0.5, "seconds_since_last": 1.0}
        stale = {"impressions_1h": 1, "click_rate_24h": 0.0, "seconds_since_last": 99.0}
        assert store.write([("u1", fresh, T0)]) == 1
        assert store.write([("u1", stale, T0 - timedelta(seconds=5))]) == 0
        # Within one batch the latest event time wins, whatever the order.
        newer = {"impressions_1h": 10, "click_rate_24h": 0.5, "seconds_since_last": 2.0}
        assert (
            store.write(
                [("u1", newer, T0 + timedelta(seconds=2)), ("u1", stale, T0 + timedelta(seconds=1))]
            )
            == 1
        )
        assert store.read(["u1"]) == [newer]
    finally:
        store.close()


def test_keys_carry_a_ttl_and_deployments_are_isolated(settings: Settings) -> None:
    spec = settings.load_spec()
    other = settings.replace(topic_prefix=settings.topic_prefix + "other.")
    mine, theirs = OnlineFeatures(settings, spec), OnlineFeatures(other, spec)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        mine.write([("u1", {"impressions_1h": 4}, T0)])
        ttl = client.ttl(mine.redis_key("u1"))
        assert 0 < ttl <= ttl_seconds(spec)
        assert theirs.read(["u1"])[0]["impressions_1h"] is None
    finally:
        client.delete(mine.redis_key("u1"), theirs.redis_key("u1"))
        client.close()
        mine.close()
        theirs.close()


def test_a_spec_without_entity_features_reads_without_asking_redis(settings: Settings) -> None:
    data = tomllib.loads(DEFAULT_SPEC.read_text())
    data["entity"]["features"] = {}
    spec = parse_spec(data)
    store = OnlineFeatures(settings, spec)
    try:
        assert store.write([("u1", {}, T0)]) == 1
        assert store.read(["u1", "nobody"]) == [{}, {}]
    finally:
        store.close()
