"""The broker side of the streams workers' fence: offsets from a member that lost its
place in the group are refused, so such a worker writes no commit record."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata

from loopline.kafka_auth import aiokafka_config
from loopline.settings import Settings


def test_the_group_refuses_offsets_from_a_stale_generation_or_member(settings: Settings) -> None:
    async def run() -> list[str]:
        consumer = AIOKafkaConsumer(
            settings.topic("events"),
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=f"{settings.topic_prefix}fence",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            **aiokafka_config(settings),
        )
        await consumer.start()
        refused = []
        try:
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=500)
            tp = sorted(consumer.assignment())[0]
            await consumer.commit({tp: OffsetAndMetadata(1, "")})  # the live member may
            coordinator = consumer._coordinator
            generation, member = coordinator.generation, coordinator.member_id
            # What a worker resumed after its session expired still believes it holds.
            for stale in ((generation + 1, member), (generation, f"{member}-gone")):
                coordinator.generation, coordinator.member_id = stale
                try:
                    with pytest.raises(CommitFailedError):
                        await asyncio.wait_for(consumer.commit({tp: OffsetAndMetadata(2, "")}), 10)
                    refused.append(str(stale[0]))
                finally:
                    coordinator.generation, coordinator.member_id = generation, member
            committed = await consumer.committed(tp)
            assert committed == 1
        finally:
            await consumer.stop()
        return refused

    assert len(asyncio.run(run())) == 2
