"""The EventBus contract: live job events to each job's watchers, run against every bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from core.jobs import JobEvent, LogLine, Progress
from core.ports import EventBus
from tests.contract.conftest import EVENT_QUEUE_LIMIT

QUIET_SECONDS = 0.1
WAIT_SECONDS = 5.0


def event(job_id: str, sequence: int) -> JobEvent:
    return JobEvent(job_id, sequence, datetime.now(UTC), 1, Progress(sequence / 100))


async def receive(events: AsyncIterator[JobEvent], count: int) -> list[int]:
    return [(await asyncio.wait_for(anext(events), WAIT_SECONDS)).sequence for _ in range(count)]


async def assert_nothing_comes(events: AsyncIterator[JobEvent]) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(events), QUIET_SECONDS)


async def test_every_watcher_of_a_job_gets_its_events_in_order(event_bus: EventBus) -> None:
    async with event_bus.subscribe("job-1") as first, event_bus.subscribe("job-1") as second:
        for sequence in (1, 2, 3):
            await event_bus.publish(event("job-1", sequence))

        assert await receive(first, 3) == [1, 2, 3]
        assert await receive(second, 3) == [1, 2, 3]


async def test_events_carry_their_payload_unchanged(event_bus: EventBus) -> None:
    sent = JobEvent("job-1", 7, datetime.now(UTC), 2, LogLine("hello"))
    async with event_bus.subscribe("job-1") as events:
        await event_bus.publish(sent)

        assert await asyncio.wait_for(anext(events), WAIT_SECONDS) == sent


async def test_a_watcher_sees_only_its_own_job(event_bus: EventBus) -> None:
    async with event_bus.subscribe("job-1") as events:
        await event_bus.publish(event("job-2", 1))
        await event_bus.publish(event("job-1", 1))

        received = await asyncio.wait_for(anext(events), WAIT_SECONDS)
        await assert_nothing_comes(events)

    assert (received.job_id, received.sequence) == ("job-1", 1)


async def test_a_watcher_gets_only_events_published_after_it_subscribed(
    event_bus: EventBus,
) -> None:
    await event_bus.publish(event("job-1", 1))

    async with event_bus.subscribe("job-1") as events:
        await event_bus.publish(event("job-1", 2))

        assert await receive(events, 1) == [2]
        await assert_nothing_comes(events)


async def test_a_watcher_that_left_gets_nothing_and_blocks_nobody(event_bus: EventBus) -> None:
    async with event_bus.subscribe("job-1") as staying:
        async with event_bus.subscribe("job-1") as leaving:
            pass

        for sequence in (1, 2, 3):
            await event_bus.publish(event("job-1", sequence))

        assert await receive(staying, 3) == [1, 2, 3]
        assert [e async for e in leaving] == []


async def test_a_watcher_that_falls_behind_loses_its_oldest_events(event_bus: EventBus) -> None:
    total = EVENT_QUEUE_LIMIT + 5
    async with event_bus.subscribe("job-1") as events:
        for sequence in range(1, total + 1):
            await event_bus.publish(event("job-1", sequence))

        kept = await receive(events, EVENT_QUEUE_LIMIT)
        await assert_nothing_comes(events)

    assert kept == list(range(6, total + 1))


async def test_closing_the_bus_ends_every_watch(event_bus: EventBus) -> None:
    async with event_bus.subscribe("job-1") as events:

        async def watch() -> list[JobEvent]:
            return [e async for e in events]

        watching = asyncio.create_task(watch())
        await asyncio.sleep(0)
        await event_bus.close()

        assert await asyncio.wait_for(watching, WAIT_SECONDS) == []
