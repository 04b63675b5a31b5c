"""The faust app: one agent reads ``events`` and ``labels`` together, in batches.

Both topics are keyed by entity and co-partitioned, so partition ``p`` of each lands
on the same worker, with partition ``p`` of the ``state`` table (changelog-backed,
restored by faust on assignment). Workers of one deployment form one consumer group
and share the partitions. The records' bytes reach :class:`~streams.runtime.Runtime`
untouched, so a bad record can be deadlettered as it arrived.

The source topics are not acked: faust would ack a batch in a ``finally`` whatever
raised and commit past durable state. The runtime commits the offsets itself, through
the same consumer, once the batch's outputs are durable (see :mod:`streams.runtime`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from faust.types import TP

from loopline.kafka import MAX_MESSAGE_BYTES, changelog_topic_config
from loopline.kafka_auth import login, ssl_context
from loopline.settings import Settings
from streams.changelog import Tails
from streams.runtime import Runtime

log = logging.getLogger("loopline.streams")

BATCH_MAX = 5000
BATCH_WITHIN = 0.5
TICK_SECONDS = 0.5
MAX_FETCH_BYTES = 64 * 1024 * 1024
COMMIT_TIMEOUT_SECONDS = 15.0


class StateTable(faust.Table[bytes, bytes]):
    """faust's table, telling :class:`~streams.changelog.Tails` what the changelog
    replays into it."""

    tails: Tails | None = None

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        events = list(batch)
        if self.tails is not None:
            self.tails.observe(((e.message.key, e.message.value) for e in events), self.data.get)
        super().apply_changelog_batch(events)


def app_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}streams"


def broker_credentials(settings: Settings) -> faust.SASLCredentials | None:
    """faust's login to the broker (None: PLAINTEXT), as :mod:`loopline.kafka_auth` says;
    faust hands it to each aiokafka client it opens (SASL_SSL when a TLS context is set)."""
    auth = login(settings)
    if not auth.sasl:
        return None
    return faust.SASLCredentials(
        username=auth.username,
        password=auth.password,
        mechanism=auth.mechanism,
        ssl_context=ssl_context(auth),
    )


def build_app(settings: Settings) -> faust.App:
    """A faust app for these settings (``streams.app.app`` is built from the environment)."""
    spec = settings.load_spec()
    datadir = settings.state_dir / "streams"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id(settings),
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=0.5,
        broker_max_poll_interval=300.0,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=MAX_FETCH_BYTES,
        producer_max_request_size=MAX_MESSAGE_BYTES,
        # faust's check compares the changelog with a watermark (which some brokers report
        # wrong) and crashes the worker; a replaced log is detected by the runtime instead.
        recovery_consistency_check=False,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(datadir),
        Table=StateTable,
    )
    source = app.topic(
        settings.topic("events"),
        settings.topic("labels"),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        acks=False,
    )
    tails = Tails()
    table = app.Table(
        "state",
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        extra_topic_configs=changelog_topic_config(),
    )
    if not isinstance(table, StateTable):  # the app's Table setting, just above
        raise TypeError(f"the state table is a {type(table).__name__}, not a StateTable")
    table.tails = tails

    async def seek(topic: str, partition: int, offset: int) -> None:
        await app.consumer.seek(TP(topic, partition), offset)

    async def commit_offsets(offsets: Mapping[tuple[str, int], int]) -> None:
        thread: Any = app.consumer._thread  # type: ignore[attr-defined]

        async def commit() -> None:
            consumer = thread._ensure_consumer()
            await consumer.commit(
                {TopicPartition(t, p): OffsetAndMetadata(o, "") for (t, p), o in offsets.items()}
            )

        await asyncio.wait_for(thread.call_thread(commit), COMMIT_TIMEOUT_SECONDS)

    def owned() -> set[int]:
        """Partitions held now; none while the group rebalances (they may be moving)."""
        if app.rebalancing:
            return set()
        events = settings.topic("events")
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == events}

    def ready() -> bool:
        """The group is stable and faust is not replaying the changelog into the table."""
        recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
        return not (app.rebalancing or app.in_recovery) and bool(recovery.completed.is_set())

    changelog = table.changelog_topic.get_topic_name()
    runtime = Runtime(
        settings,
        spec,
        table.data,
        changelog,
        seek,
        commit_offsets=commit_offsets,
        owned=owned,
        ready=ready,
        tails=tails,
    )

    @app.agent(source)
    async def pipeline(stream: Any) -> AsyncIterator[None]:
        # ``process`` never raises: a failed batch is undone and read again.
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
            await runtime.process(
                (m.topic, m.partition, m.offset, m.key, m.value)
                for m in (e.message for e in events)
            )
            yield None

    def assigned() -> set[int]:
        """Partitions held once the group is stable and the table restored, else none."""
        if not ready():
            return set()
        events = settings.topic("events")
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == events}

    @app.timer(TICK_SECONDS)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        await runtime.tick(assigned())

    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        events = settings.topic("events")
        await runtime.revoke(tp.partition for tp in revoked if tp.topic == events)

    held: set[int] = set()

    async def on_assigned(sender: Any, assigned: Any, **_: Any) -> None:
        # Every partition is rebuilt from its changelog once faust has recovered the table.
        events = settings.topic("events")
        now = {tp.partition for tp in assigned if tp.topic == events}
        await runtime.revoke(list(runtime.partitions))
        # faust resumes a partition it recovered before from where that recovery ended,
        # replaying into a table that holds this worker's later writes: a replay that
        # stops short of the end (a high watermark that lags) would leave a mix of two
        # commits. Every partition held is rebuilt from the changelog's start instead, so
        # the table always holds the state of a prefix of the changelog.
        await runtime.purge(held)
        recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
        for p in held:
            tp = TP(changelog, p)
            # None reads from the log's start; a missing key reads as 0 (a Counter), which
            # would skip the record at offset 0.
            if tp in recovery.active_offsets:
                recovery.active_offsets[tp] = None
            recovery.active_highwaters.pop(tp, None)
        held.clear()
        held.update(now)

    async def on_shutdown(sender: Any, **_: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, runtime.reporter.drain, 2.0)
        runtime.close()

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(on_shutdown)  # type: ignore[arg-type]

    return app
