"""The join, dedup and horizon logic of one partition, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from loopline.errors import Reason
from loopline.spec import DEFAULT_SPEC, Spec, load_spec
from streams.changelog import Tails, commit_key
from streams.health import HealthMonitor
from streams.partition import ORPHAN_GRACE, PartitionState, fingerprint

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
GOOD = {"price": 12.5, "hour": 9, "device": "mobile"}
DELIVERY = Path(__file__).parents[2] / "specs" / "delivery_eta.toml"


def event(
    event_id: str, entity: str = "u1", ts: datetime = NOW, features: dict[str, object] | None = None
) -> tuple[bytes, bytes]:
    record = {
        "schema_version": 1,
        "event_id": event_id,
        "entity_id": entity,
        "ts": ts.isoformat(),
        "features": features or GOOD,
    }
    return entity.encode(), orjson.dumps(record)


def label(
    event_id: str, value: float, entity: str = "u1", ts: datetime = NOW
) -> tuple[bytes, bytes]:
    record = {
        "schema_version": 1,
        "event_id": event_id,
        "entity_id": entity,
        "ts": ts.isoformat(),
        "label": value,
    }
    return entity.encode(), orjson.dumps(record)


class Feed:
    """Offsets per topic, like a partition of ``events`` and ``labels``."""

    def __init__(self, spec: Spec, table: dict[bytes, bytes] | None = None) -> None:
        self.spec = spec
        self.table: dict[bytes, bytes] = {} if table is None else table
        self.state = PartitionState(0, spec, self.table, HealthMonitor(spec, NOW.timestamp()))
        # Logs that start at 0 and end far ahead: resume right after the last commit.
        self.offsets = {topic: self.state.start(topic, 0) for topic in ("events", "labels")}
        self.state.tick(NOW)  # a worker ticks from the start

    def event(self, record: tuple[bytes, bytes], now: datetime = NOW) -> None:
        self.state.on_event(self.offsets["events"], *record, now)
        self.offsets["events"] += 1

    def label(self, record: tuple[bytes, bytes], now: datetime = NOW) -> None:
        self.state.on_label(self.offsets["labels"], *record, now)
        self.offsets["labels"] += 1

    def balanced(self) -> bool:
        c = self.state.counts
        events = sum(
            c.get(n, 0) for n in ("examples", "deadlettered", "duplicates", "pending", "dropped")
        )
        labels = sum(
            c.get(n, 0)
            for n in ("labels_joined", "labels_deadlettered", "labels_duplicates", "labels_waiting")
        )
        return c.get("events", 0) == events and c.get("labels", 0) == labels


@pytest.fixture
def spec() -> Spec:
    return load_spec(DEFAULT_SPEC)


def horizon(spec: Spec) -> timedelta:
    return timedelta(seconds=spec.label.horizon_seconds)


def test_a_label_joins_its_event_with_the_features_served_at_event_time(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1"))
    feed.event(event("e2", ts=NOW + timedelta(seconds=5)))
    feed.label(label("e2", 1))
    (only,) = feed.state.batch.examples
    example = orjson.loads(only[2])
    assert example["event_id"] == "e2" and example["label"] == 1 and example["label_observed"]
    assert example["features"]["impressions_1h"] == 1  # e1, seen before e2
    assert example["features"]["seconds_since_last"] is None  # one event was known when e2 came
    assert example["imputed"] == ["category", "recent_views", "discount"]
    assert feed.state.counts["pending"] == 1 and feed.balanced()


def test_duplicates_of_events_and_labels_are_counted_not_emitted(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1"))
    feed.event(event("e1"))
    feed.label(label("e1", 0))
    feed.label(label("e1", 1))
    assert len(feed.state.batch.examples) == 1
    assert feed.state.counts["duplicates"] == 1 and feed.state.counts["labels_duplicates"] == 1
    assert feed.balanced()


def test_the_horizon_applies_the_default_and_a_late_label_is_deadlettered(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1"))
    later = NOW + horizon(spec) + timedelta(seconds=1)
    feed.state.tick(later)
    example = orjson.loads(feed.state.batch.examples[0][2])
    assert example["label"] == spec.label.default and not example["label_observed"]
    feed.label(label("e1", 1), now=later)
    (dead,) = feed.state.batch.deadletters
    assert dead.reason is Reason.EXPIRED_EVENT and dead.topic == "labels"
    assert feed.state.counts["labels_late"] == 1 and feed.balanced()


def skew(spec: Spec) -> timedelta:
    return timedelta(seconds=spec.validation.max_future_seconds)


def test_a_label_stamped_after_the_horizon_is_late_even_if_it_arrives_first(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1"))
    late = NOW + horizon(spec) + skew(spec) + timedelta(seconds=1)
    feed.label(label("e1", 1, ts=late), now=NOW + horizon(spec) + timedelta(seconds=2))
    assert orjson.loads(feed.state.batch.examples[0][2])["label_observed"] is False
    assert feed.state.batch.deadletters[0].reason is Reason.EXPIRED_EVENT
    assert feed.balanced()


def test_a_labeller_whose_clock_runs_ahead_still_joins_its_labels(spec: Spec) -> None:
    """Within the clock skew the spec tolerates, the label's stamp does not make it late."""
    feed = Feed(spec)
    feed.event(event("e1"))
    ahead = timedelta(seconds=60)
    feed.label(label("e1", 1, ts=NOW + horizon(spec) - timedelta(seconds=5) + ahead))
    (only,) = feed.state.batch.examples
    assert orjson.loads(only[2])["label_observed"] is True
    assert not feed.state.batch.deadletters and feed.balanced()


def test_a_resolved_event_is_recognised_until_it_is_too_old_to_be_accepted(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1"))
    feed.label(label("e1", 1))
    later = NOW + 10 * horizon(spec)  # long after the old one-horizon marker would have gone
    feed.state.tick(later)
    feed.event(event("e1"), now=later)
    assert feed.state.counts["duplicates"] == 1 and len(feed.state.batch.examples) == 1
    gone = NOW + timedelta(seconds=spec.validation.max_age_seconds + 1)
    feed.state.tick(gone)
    feed.event(event("e1"), now=gone)  # now too old for validation: deadlettered, not learned
    assert feed.state.batch.deadletters[-1].reason is Reason.TOO_OLD
    assert len(feed.state.batch.examples) == 1 and feed.balanced()


def test_a_rolled_back_batch_leaves_the_table_as_of_the_last_commit(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1"))
    feed.state.to_changelog({})
    feed.state.committed()
    committed = dict(feed.table)
    feed.event(event("e2"))
    feed.label(label("e1", 1))
    feed.state.feature_rows()
    feed.state.to_changelog({})
    assert feed.table != committed
    feed.state.rollback()
    assert feed.table == committed
    again = PartitionState(0, spec, feed.table, HealthMonitor(spec, NOW.timestamp()))
    assert again.start("events", 0) == 1 and again.start("labels", 0) == 0


def test_the_start_resumes_after_the_commit_and_reports_a_log_that_lost_records(
    spec: Spec,
) -> None:
    feed = Feed(spec)
    for i in range(3):
        feed.event(event(f"e{i}"))
    feed.state.to_changelog({})
    feed.state.committed()
    again = PartitionState(0, spec, feed.table, HealthMonitor(spec, NOW.timestamp()))
    assert again.start("events", 0) == 3  # the log as committed
    assert again.tips["events"] == fingerprint(*event("e2"))
    retained = PartitionState(0, spec, feed.table, HealthMonitor(spec, NOW.timestamp()))
    assert retained.start("events", 7) == 7
    assert retained.counts["events_lost_to_retention"] == 4
    emptied = PartitionState(0, spec, feed.table, HealthMonitor(spec, NOW.timestamp()))
    emptied.start("events", 0)
    assert emptied.reset("events", 0) == 0  # a broker that restarted empty
    assert emptied.counts["events_log_resets"] == 1 and "events" not in emptied.tips


def test_offsets_apply_strictly_in_order(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e0"))
    feed.state.on_event(5, *event("e5"), NOW)  # ahead of a gap: skipped, reported
    feed.state.on_event(0, *event("e0"), NOW)  # already applied: skipped, reported
    assert feed.state.take_gaps() == ({"events"}, {"events"})
    assert feed.state.counts["events"] == 1 and feed.state.applied["events"] == 0


def test_on_missing_drop_drops_and_counts(tmp_path: Path) -> None:
    spec = load_spec(DELIVERY)
    feed = Feed(spec)
    features = {"distance_km": 10.0, "carrier": "post", "express": False}
    feed.event(event("d1", "depot1", features=features))
    feed.state.tick(NOW + horizon(spec) + timedelta(seconds=1))
    assert feed.state.batch.examples == []
    assert feed.state.counts["dropped"] == 1 and feed.balanced()


def test_a_label_that_overtakes_its_event_waits_for_it(spec: Spec) -> None:
    feed = Feed(spec)
    feed.label(label("e1", 1))
    assert feed.state.counts["labels_waiting"] == 1
    feed.event(event("e1"))
    assert orjson.loads(feed.state.batch.examples[0][2])["label"] == 1
    assert feed.state.counts["labels_waiting"] == 0 and feed.balanced()


def test_a_label_for_no_event_waits_until_events_read_are_past_it(spec: Spec) -> None:
    feed = Feed(spec)
    feed.label(label("ghost", 1))
    feed.state.tick(NOW + timedelta(seconds=ORPHAN_GRACE * 2))
    assert feed.state.batch.deadletters == []  # no event read since: it may be in a backlog
    feed.event(event("e1", ts=NOW + timedelta(seconds=ORPHAN_GRACE + 1)))
    feed.state.tick(NOW)
    (dead,) = feed.state.batch.deadletters
    assert dead.reason is Reason.UNKNOWN_EVENT and dead.value == label("ghost", 1)[1]
    assert feed.balanced()


def test_a_label_for_no_event_gives_up_after_a_horizon(spec: Spec) -> None:
    feed = Feed(spec)
    feed.label(label("ghost", 1))
    feed.state.tick(datetime.now(UTC) + horizon(spec) + timedelta(seconds=1))
    assert feed.state.batch.deadletters[0].reason is Reason.UNKNOWN_EVENT


def test_a_label_waits_while_a_backlog_of_events_is_read(spec: Spec) -> None:
    """Labels read ahead of a backlog of older events wait for as long as it drains."""
    feed = Feed(spec)
    feed.label(label("late-event", 1), now=NOW)
    later = NOW
    for i in range(5):  # events older than the label, read over three horizons
        later += horizon(spec) * 0.6
        feed.event(event(f"old-{i}", ts=NOW - timedelta(hours=1)), now=later)
        feed.state.tick(later)
    assert feed.state.batch.deadletters == []
    feed.event(event("late-event", ts=NOW - timedelta(seconds=10)), now=later)
    labelled = [orjson.loads(e[2]) for e in feed.state.batch.examples]
    assert [e["label"] for e in labelled if e["event_id"] == "late-event"] == [1]
    # Once no event has been read for a horizon, a label for no event gives up.
    feed.label(label("ghost", 1), now=later)
    feed.state.tick(later + horizon(spec) + timedelta(seconds=1))
    assert feed.state.batch.deadletters[0].reason is Reason.UNKNOWN_EVENT
    assert feed.balanced()


def test_an_event_waits_past_its_horizon_while_a_backlog_of_labels_is_read(spec: Spec) -> None:
    """After a restart the labels of past events are still to be read: the horizon passes
    by wall clock, but the event keeps waiting for them."""
    feed = Feed(spec)
    feed.event(event("e1"))
    later = NOW + horizon(spec)
    for i in range(5):  # labels older than e1's horizon, read a second apart
        later += timedelta(seconds=1)
        feed.event(event(f"old-{i}", ts=NOW - timedelta(seconds=5)), now=later)
        feed.label(label(f"old-{i}", 0, ts=NOW - timedelta(seconds=5)), now=later)
        feed.state.tick(later)
    assert "e1" not in [orjson.loads(e[2])["event_id"] for e in feed.state.batch.examples]
    feed.label(label("e1", 1), now=later)
    joined = [orjson.loads(e[2]) for e in feed.state.batch.examples]
    assert [(e["label"], e["label_observed"]) for e in joined if e["event_id"] == "e1"] == [
        (1, True)
    ]
    assert feed.state.counts.get("labels_late", 0) == 0 and feed.balanced()


def test_an_event_takes_the_default_once_labels_read_pass_it_or_stop(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1"))
    feed.event(event("e2", entity="u2", ts=NOW + timedelta(seconds=30)))
    past = NOW + horizon(spec) + timedelta(seconds=10)
    feed.label(label("other", 1, ts=past), now=past)  # labels read past e1's horizon
    feed.state.tick(past)
    expired = [orjson.loads(e[2]) for e in feed.state.batch.examples]
    assert [(e["event_id"], e["label_observed"]) for e in expired] == [("e1", False)]
    quiet = past + timedelta(seconds=30)  # and then no label at all: e2's goes by the clock
    feed.state.tick(quiet)
    assert [orjson.loads(e[2])["event_id"] for e in feed.state.batch.examples] == ["e1", "e2"]


def test_after_a_restart_a_held_label_waits_for_the_events_still_to_be_read(spec: Spec) -> None:
    log = Changelog()
    feed = Feed(spec)
    feed.label(label("e1", 1))
    log.commit(feed.state, {})
    restarted = log.restore(spec)  # an hour later: the label is old, its event unread
    later = NOW + timedelta(hours=1)
    offsets = {t: restarted.start(t, 0) for t in ("events", "labels")}
    restarted.tick(later)
    assert restarted.batch.deadletters == []
    restarted.on_event(offsets["events"], *event("e1"), later)
    joined = [orjson.loads(e[2]) for e in restarted.batch.examples]
    assert [(e["event_id"], e["label"]) for e in joined] == [("e1", 1)]


def test_rejected_labels_do_not_hold_events_back(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1"))
    t = NOW
    while t < NOW + horizon(spec) + timedelta(seconds=30):
        t += timedelta(seconds=2)
        feed.label((b"u1", b"\xff poison"), now=t)  # a label stream of nothing but poison
        feed.state.tick(t)
    assert [orjson.loads(e[2])["event_id"] for e in feed.state.batch.examples] == ["e1"]


def test_a_label_stamped_ahead_does_not_end_the_wait_for_a_backlog(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1"))
    later = NOW + horizon(spec) + timedelta(seconds=1)
    ahead = later + timedelta(seconds=spec.validation.max_future_seconds - 1)
    feed.label(label("other", 1, ts=ahead), now=later)  # a labeller's clock far ahead
    feed.state.tick(later)
    assert feed.state.counts["labels_waiting"] == 1 and feed.state.batch.examples == []


def test_bad_records_are_deadlettered_with_their_coordinates(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event((b"u1", b"{nope"))
    feed.event(event("e1", features={**GOOD, "hour": 99}))
    feed.label((b"u1", b"[]"))
    reasons = [(d.reason, d.topic, d.offset) for d in feed.state.batch.deadletters]
    assert reasons == [
        (Reason.MALFORMED_JSON, "events", 0),
        (Reason.OUT_OF_RANGE, "events", 1),
        (Reason.WRONG_TYPE, "labels", 0),
    ]
    assert feed.balanced()


class Changelog:
    """A state changelog partition: records in order, replayed as faust restores it."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    def commit(self, state: PartitionState, outputs: dict[str, int], crash: bool = False) -> None:
        """Write a batch; ``crash``: everything but its commit record lands."""
        records = state.to_changelog(outputs)
        assert records[-1][0] == commit_key(state.partition)
        self.records += records[:-1] if crash else records
        if not crash:
            state.committed()

    def restore(self, spec: Spec) -> PartitionState:
        table: dict[bytes, bytes] = {}
        tails = Tails()
        tails.observe(self.records, table.get)
        for key, value in self.records:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        return PartitionState(0, spec, table, HealthMonitor(spec, NOW.timestamp()), tails.take(0))


def test_each_change_is_written_once_and_the_commit_record_last(spec: Spec) -> None:
    feed = Feed(spec)
    for i in range(20):
        feed.event(event(f"e{i}", entity=f"u{i % 3}"))
        feed.label(label(f"e{i}", 1, entity=f"u{i % 3}"))
    feed.state.feature_rows()
    records = feed.state.to_changelog({"examples": 20})
    keys = [k for k, _ in records]
    assert len(keys) == len(set(keys)) == len(feed.state.batch.changes) + 1
    ckey, raw = records[-1]
    assert ckey == b"0|commit|last" and raw is not None
    assert "changes" not in orjson.loads(raw) and len(raw) < 1000


def test_a_crash_between_the_keys_and_the_commit_record_restores_the_last_commit(
    spec: Spec,
) -> None:
    log = Changelog()
    feed = Feed(spec)
    feed.event(event("e1"))
    feed.state.feature_rows()
    log.commit(feed.state, {"examples": 0})
    committed, counts = dict(feed.table), dict(feed.state.counts)
    feed.event(event("e2"))
    feed.label(label("e1", 1))
    feed.state.feature_rows()
    log.commit(feed.state, {"examples": 1}, crash=True)
    restored = log.restore(spec)
    assert restored.table == committed and restored.counts == counts
    assert restored.start("events", 0) == 1 and restored.start("labels", 0) == 0
    assert restored.rewrite  # the keys the crashed batch wrote, put back
    # Read again: the same outputs, and the changelog agrees with the table after a commit.
    restored.on_event(1, *event("e2"), NOW)
    restored.on_label(0, *label("e1", 1), NOW)
    assert [orjson.loads(x[2])["event_id"] for x in restored.batch.examples] == ["e1"]
    restored.feature_rows()
    log.commit(restored, {"examples": 1})
    assert not restored.rewrite
    again = log.restore(spec)
    assert again.table == restored.table and not again.rewrite
    assert again.counts == restored.counts


def test_a_crash_on_a_restored_partition_keeps_the_commit_before_it(spec: Spec) -> None:
    log = Changelog()
    feed = Feed(spec)
    feed.event(event("e1"))
    log.commit(feed.state, {})
    committed = dict(feed.table)
    feed.event(event("e2"))
    log.commit(feed.state, {}, crash=True)
    restored = log.restore(spec)
    restored.start("events", 0)
    restored.on_event(1, *event("e3"), NOW)
    log.commit(restored, {}, crash=True)  # crashes again before its commit record
    assert log.restore(spec).table == committed


def test_a_commit_record_of_the_earlier_layout_is_applied(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1"))
    records = feed.state.to_changelog({"examples": 0})
    ckey, raw = records[-1]
    assert raw is not None
    earlier = orjson.loads(raw)
    earlier["changes"] = {k.decode(): None if v is None else v.decode() for k, v in records[:-1]}
    # The earlier layout wrote the commit record first; a crash left only it.
    again = Feed(spec, {ckey: orjson.dumps(earlier)})
    assert {k: v for k, v in again.table.items() if k != ckey} == dict(records[:-1])
    assert again.state.rewrite == dict(records[:-1])
    assert again.offsets["events"] == 1


def test_outputs_found_after_a_crash_are_not_emitted_again(spec: Spec) -> None:
    feed = Feed(spec)
    feed.state.suppress({"e1"}, {("events", 1)})
    feed.event(event("e1"))
    feed.event((b"u1", b"{nope"))
    feed.label(label("e1", 1))
    assert feed.state.batch.examples == [] and feed.state.batch.deadletters == []
    assert feed.state.counts["examples"] == 1 and feed.state.counts["deadlettered"] == 1


def test_a_record_ahead_of_a_gap_waits_for_the_gap(spec: Spec) -> None:
    feed = Feed(spec)
    feed.state.on_event(0, *event("e1"), NOW)
    feed.state.on_event(5, *event("e5"), NOW)  # prefetched ahead of a seek
    feed.state.on_event(1, *event("e2"), NOW)
    assert feed.state.applied["events"] == 1 and feed.state.counts["events"] == 2


def test_entities_idle_past_every_window_are_dropped_from_state(spec: Spec) -> None:
    feed = Feed(spec)
    feed.event(event("e1", entity="old"))
    feed.state.feature_rows()
    feed.state.to_changelog({})
    feed.state.committed()
    assert any(k.endswith(b"|f|old") for k in feed.table)
    keep = feed.state._entity_spec.keep_seconds + spec.label.horizon_seconds
    later = NOW + timedelta(seconds=keep + 60)
    feed.event(event("e2", entity="new", ts=later), now=later)
    feed.state.feature_rows()
    feed.state.tick(later)
    assert not any(k.endswith(b"|f|old") for k in feed.table)
    assert any(k.endswith(b"|f|new") for k in feed.table)
    assert feed.state.counts["entities_evicted"] == 1 and feed.balanced()


def _fill(state: PartitionState, offsets: dict[str, int], prefix: str, entities: int) -> None:
    """Events (and their labels) until the batch is full, as ``Runtime.process`` checks."""
    i = 0
    while not state.full:
        entity = f"u{i % entities}"
        state.on_event(offsets["events"], *event(f"{prefix}{i}", entity=entity), NOW)
        offsets["events"] += 1
        state.on_label(offsets["labels"], *label(f"{prefix}{i}", 1, entity=entity), NOW)
        offsets["labels"] += 1
        i += 1


def _commit(state: PartitionState, log: Changelog | None = None) -> int:
    """Commit the batch; the size of its largest changelog record."""
    state.feature_rows()
    records = state.to_changelog({})
    if log is not None:
        log.records += records
    state.committed()
    return max(len(k) + len(v or b"") for k, v in records)


LIMIT = 1_000_000  # Apache Kafka's default max.message.bytes


def test_changelog_records_stay_under_the_broker_limit_across_a_restart(spec: Spec) -> None:
    log = Changelog()
    feed = Feed(spec)
    _fill(feed.state, feed.offsets, "a", entities=10**9)
    assert _commit(feed.state, log) < LIMIT
    _fill(feed.state, feed.offsets, "b", entities=10**9)
    log.commit(feed.state, {}, crash=True)
    restarted = log.restore(spec)
    offsets = {t: restarted.start(t, 0) for t in ("events", "labels")}
    assert restarted.rewrite and restarted.batch.size == 0  # rewritten, not a batch of its own
    _fill(restarted, offsets, "c", entities=10**9)
    assert _commit(restarted, log) < LIMIT and not restarted.rewrite


def test_a_tick_that_expires_a_backlog_commits_it_in_parts_under_the_limit(spec: Spec) -> None:
    feed = Feed(spec)
    for i in range(30_000):
        feed.event(event(f"e{i}", entity=f"u{i % 50}"))
        if feed.state.full:
            _commit(feed.state)
    _commit(feed.state)
    later = NOW + horizon(spec) + timedelta(seconds=1)
    examples = 0
    for _ in range(100):
        feed.state.tick(later)
        if not feed.state.dirty:
            break
        examples += len(feed.state.batch.examples)
        assert _commit(feed.state) < LIMIT
    assert examples == 30_000 and feed.state.counts["pending"] == 0 and feed.balanced()
