"""Leases: a job runs once at a time, however many messages for it the broker carries, and a
dead worker's job starts again once its lease runs out. Long deliveries are handed off before the
broker's consumer timeout could take them back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core.adapters.memory_broker import MemoryBroker
from core.backends import Backends
from core.jobs import JobInput, JobState, StateChanged
from core.ports import Claimed
from tests.workers.helpers import (
    create_job,
    enqueue,
    stored_events,
    submit,
    until,
    wait_for_end,
    wait_for_state,
)

LEASE = timedelta(seconds=0.5)


def attempts_started(events: list[Any]) -> list[int]:
    return [
        e.attempt
        for e in events
        if isinstance(e.payload, StateChanged) and e.payload.state is JobState.RUNNING
    ]


def endings(events: list[Any]) -> int:
    return sum(
        1 for e in events if isinstance(e.payload, StateChanged) and e.payload.state.terminal
    )


async def test_a_second_message_for_a_running_job_does_not_start_it_twice(
    backends: Backends, start_worker: Any
) -> None:
    await start_worker(lease=LEASE)
    job = await submit(backends, "local/sleep", JobInput(duration_seconds=1.5))
    await wait_for_state(backends, job.id, JobState.RUNNING)
    await enqueue(backends, job)  # a duplicate publish, e.g. from the outbox sweep

    done = await wait_for_end(backends, job.id)

    events = await stored_events(backends, job.id)
    assert done.state is JobState.SUCCEEDED and done.attempt == 1
    assert attempts_started(events) == [1] and endings(events) == 1


async def test_a_dead_workers_job_starts_again_once_its_lease_runs_out(
    backends: Backends, start_worker: Any
) -> None:
    job = await create_job(backends, "local/echo", JobInput(prompt="again"))
    # A worker claimed it and died: no heartbeat renews its lease.
    claimed = await backends.jobs.claim(job.id, LEASE)
    assert isinstance(claimed, Claimed)
    await start_worker(lease=LEASE)
    await enqueue(backends, job)  # its delivery, back from the broker

    done = await wait_for_end(backends, job.id)

    assert done.state is JobState.SUCCEEDED and done.attempt == 2
    assert endings(await stored_events(backends, job.id)) == 1


async def test_a_long_delivery_is_handed_off_and_the_job_still_runs_once(
    backends: Backends, start_worker: Any
) -> None:
    broker = backends.broker
    assert isinstance(broker, MemoryBroker)
    await start_worker(lease=LEASE, handoff_seconds=0.3)
    job = await submit(backends, "local/sleep", JobInput(duration_seconds=2))

    done = await wait_for_end(backends, job.id)
    # The handed-off copy comes back after the job ended, and is dropped.
    await until(lambda: broker.queued("local/sleep") == 0)

    events = await stored_events(backends, job.id)
    assert done.state is JobState.SUCCEEDED and done.attempt == 1
    assert attempts_started(events) == [1] and endings(events) == 1


async def test_a_stopped_worker_gives_its_job_back_at_once(
    backends: Backends, start_worker: Any
) -> None:
    first = await start_worker(lease=timedelta(minutes=5))
    job = await submit(backends, "local/sleep", JobInput(duration_seconds=1))
    await wait_for_state(backends, job.id, JobState.RUNNING)

    await first.stop(0)
    await start_worker(lease=timedelta(minutes=5))
    done = await wait_for_end(backends, job.id)

    assert done.state is JobState.SUCCEEDED and done.attempt == 2
