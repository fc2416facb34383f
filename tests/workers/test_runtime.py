"""The worker runtime: claiming, cancelling, fencing stale attempts, redelivery, concurrency,
failures of providers and of the store, and graceful stop."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.backends import Backends
from core.errors import Reason
from core.jobs import JobError, JobInput, JobState, Progress, StateChanged
from core.providers.base import RunContext
from core.providers.registry import builtin_registry
from tests.workers.conftest import StartWorker
from tests.workers.helpers import (
    FunctionProvider,
    Gate,
    stored_events,
    submit,
    until,
    wait_for_end,
    wait_for_state,
)
from workers import runtime
from workers.context import AttemptContext, AttemptLost
from workers.runtime import Worker

CANCELLED = JobError(Reason.CANCELLED, "cancelled by the test")


async def cancel(backends: Backends, job_id: str) -> None:
    """What CancelJob does: the conditional update, then the event on the bus."""
    result = await backends.jobs.cancel(job_id, CANCELLED)
    assert result is not None and result[1] is not None
    await backends.events.publish(result[1])


def queued(backends: Backends, model: str) -> int:
    return backends.broker.queued(model)  # type: ignore[attr-defined]


async def test_a_job_cancelled_while_queued_never_starts(
    backends: Backends, start_worker: StartWorker
) -> None:
    never = await submit(backends, "local/echo", JobInput(prompt="never"))
    await cancel(backends, never.id)
    after = await submit(backends, "local/echo", JobInput(prompt="after"))

    worker = await start_worker(concurrency=1)
    await wait_for_end(backends, after.id)
    await worker.stop(1)

    job = await backends.jobs.get(never.id)
    assert job is not None and job.state is JobState.CANCELLED and job.attempt == 0
    states = [e.payload for e in await stored_events(backends, never.id)]
    assert states == [StateChanged(JobState.QUEUED), StateChanged(JobState.CANCELLED, CANCELLED)]
    # Acked, not left for another worker.
    assert queued(backends, "local/echo") == 0


async def test_cancel_while_running_stops_the_provider_promptly(
    backends: Backends, start_worker: StartWorker
) -> None:
    stopped = asyncio.Event()

    async def sleep_until_cancelled(ctx: RunContext) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    await start_worker(FunctionProvider("test/forever", sleep_until_cancelled), concurrency=1)
    job = await submit(backends, "test/forever")
    await wait_for_state(backends, job.id, JobState.RUNNING)

    await cancel(backends, job.id)

    async with asyncio.timeout(1):
        await stopped.wait()
    # The slot is free again, and the cancelled job keeps its ending.
    after = await submit(backends, "local/echo", JobInput(prompt="next"))
    assert (await wait_for_end(backends, after.id)).state is JobState.SUCCEEDED
    final = await backends.jobs.get(job.id)
    assert final is not None and final.state is JobState.CANCELLED and final.error == CANCELLED
    assert (await stored_events(backends, job.id))[-1].payload == StateChanged(
        JobState.CANCELLED, CANCELLED
    )


async def test_a_cancelled_sleep_records_nothing_more(
    backends: Backends, start_worker: StartWorker
) -> None:
    await start_worker(concurrency=1)
    job = await submit(backends, "local/sleep", JobInput(duration_seconds=60))
    await wait_for_state(backends, job.id, JobState.RUNNING)

    await cancel(backends, job.id)
    after = await submit(backends, "local/echo", JobInput(prompt="next"))
    await wait_for_end(backends, after.id)

    events = await stored_events(backends, job.id)
    assert events[-1].payload == StateChanged(JobState.CANCELLED, CANCELLED)
    assert not any(isinstance(e.payload, Progress) for e in events)


async def test_a_cancel_the_event_bus_missed_still_stops_the_provider(
    backends: Backends, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "OWNERSHIP_CHECK_SECONDS", 0.05)
    stopped = asyncio.Event()

    async def sleep_until_cancelled(ctx: RunContext) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    await start_worker(FunctionProvider("test/forever", sleep_until_cancelled))
    job = await submit(backends, "test/forever")
    await wait_for_state(backends, job.id, JobState.RUNNING)

    # Cancelled in the store only: no event reaches the worker.
    assert await backends.jobs.cancel(job.id, CANCELLED) is not None

    async with asyncio.timeout(2):
        await stopped.wait()


async def test_a_redelivery_after_a_crash_runs_as_the_next_attempt_and_fences_the_stale_one(
    backends: Backends, start_worker: StartWorker
) -> None:
    job = await submit(backends, "local/echo", JobInput(prompt="twice"))
    # A worker takes the job, starts attempt 1, and dies before acking.
    async with backends.broker.consume(None, prefetch=1) as deliveries:
        delivery = await anext(deliveries)
        claimed = await backends.jobs.claim(delivery.message.job_id)
        assert claimed is not None
    stale_job, _ = claimed
    stale = AttemptContext(stale_job, backends.jobs, backends.events, backends.blobs)

    await start_worker()
    done = await wait_for_end(backends, job.id)

    assert done.state is JobState.SUCCEEDED and done.attempt == 2
    assert done.outputs[0].text == "twice"
    recorded = await stored_events(backends, job.id)
    with pytest.raises(AttemptLost):
        await stale.progress(0.5, "zombie")
    with pytest.raises(AttemptLost):
        await stale.output_text("echo", "zombie")
    assert await backends.jobs.finish(job.id, 1, JobState.FAILED) is None
    assert await stored_events(backends, job.id) == recorded
    runs = [e.attempt for e in recorded if e.payload == StateChanged(JobState.RUNNING)]
    assert runs == [1, 2]


async def test_an_attempt_taken_over_by_a_newer_one_stops_and_records_nothing(
    backends: Backends, start_worker: StartWorker
) -> None:
    stopped = asyncio.Event()

    async def sleep_until_cancelled(ctx: RunContext) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    await start_worker(FunctionProvider("test/forever", sleep_until_cancelled))
    job = await submit(backends, "test/forever")
    await wait_for_state(backends, job.id, JobState.RUNNING)

    # Another worker, given the job again, starts attempt 2.
    claimed = await backends.jobs.claim(job.id)
    assert claimed is not None
    await backends.events.publish(claimed[1])

    async with asyncio.timeout(1):
        await stopped.wait()
    await until(lambda: queued(backends, "test/forever") == 0)
    current = await backends.jobs.get(job.id)
    assert current is not None and current.state is JobState.RUNNING and current.attempt == 2
    assert (await stored_events(backends, job.id))[-1] == claimed[1]


async def test_a_model_without_a_provider_here_fails_with_provider_error(
    backends: Backends, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await submit(backends, "elsewhere/model")

    done = await wait_for_end(backends, job.id)

    assert done.state is JobState.FAILED and done.error is not None
    assert done.error.reason is Reason.PROVIDER_ERROR
    assert "elsewhere/model" in done.error.message


async def test_a_provider_that_raises_fails_once_and_is_not_retried(
    backends: Backends, start_worker: StartWorker
) -> None:
    async def broken(ctx: RunContext) -> None:
        await ctx.log("about to break")
        raise ZeroDivisionError("oops")

    await start_worker(FunctionProvider("test/broken", broken))
    job = await submit(backends, "test/broken")

    done = await wait_for_end(backends, job.id)

    assert done.error == JobError(Reason.PROVIDER_ERROR, "the provider failed: ZeroDivisionError")
    await until(lambda: queued(backends, "test/broken") == 0)
    assert done.attempt == 1


async def test_no_more_jobs_run_at_once_than_the_concurrency(
    backends: Backends, start_worker: StartWorker
) -> None:
    gate = Gate()
    await start_worker(FunctionProvider("test/gate", gate), concurrency=2)
    jobs = [await submit(backends, "test/gate") for _ in range(5)]

    await until(lambda: gate.entered == 2)
    await asyncio.sleep(0.05)
    states = [(await backends.jobs.get(job.id)).state for job in jobs]  # type: ignore[union-attr]
    assert gate.holding == 2
    assert states.count(JobState.RUNNING) == 2 and states.count(JobState.QUEUED) == 3

    gate.opened.set()
    for job in jobs:
        assert (await wait_for_end(backends, job.id)).state is JobState.SUCCEEDED
    assert gate.entered == 5 and gate.most_at_once == 2


async def test_the_outcome_is_recorded_again_as_a_new_attempt_when_the_store_fails(
    backends: Backends, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "REQUEUE_BACKOFF_SECONDS", 0.01)
    jobs = backends.jobs
    real_finish = jobs.finish
    failures = []

    async def finish_failing_once(*args: object, **kwargs: object) -> object:
        if not failures:
            failures.append(args)
            raise OSError("the job store is down")
        return await real_finish(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs, "finish", finish_failing_once)
    await start_worker()
    job = await submit(backends, "local/echo", JobInput(prompt="again"))

    done = await wait_for_end(backends, job.id)

    assert len(failures) == 1
    assert done.state is JobState.SUCCEEDED and done.attempt == 2
    await until(lambda: queued(backends, "local/echo") == 0)


async def test_stop_drains_finished_work_and_requeues_the_unfinished(
    backends: Backends, start_worker: StartWorker
) -> None:
    gate = Gate()
    worker = await start_worker(FunctionProvider("test/gate", gate), concurrency=2)
    quick = await submit(backends, "local/sleep", JobInput(duration_seconds=0.2))
    held = await submit(backends, "test/gate")
    await wait_for_state(backends, quick.id, JobState.RUNNING)
    await until(lambda: gate.entered == 1)

    began = time.monotonic()
    await worker.stop(grace=1.0)

    assert time.monotonic() - began < 2.0
    finished = await backends.jobs.get(quick.id)
    assert finished is not None and finished.state is JobState.SUCCEEDED
    unfinished = await backends.jobs.get(held.id)
    assert unfinished is not None and unfinished.state is JobState.RUNNING
    assert unfinished.attempt == 1 and gate.holding == 0
    assert queued(backends, "test/gate") == 1 and queued(backends, "local/sleep") == 0

    gate.opened.set()
    await start_worker(FunctionProvider("test/gate", gate))
    done = await wait_for_end(backends, held.id)
    assert done.state is JobState.SUCCEEDED and done.attempt == 2


async def test_stop_before_the_grace_ends_returns_as_soon_as_the_work_is_done(
    backends: Backends, start_worker: StartWorker
) -> None:
    worker = await start_worker()
    job = await submit(backends, "local/sleep", JobInput(duration_seconds=0.1))
    await wait_for_state(backends, job.id, JobState.RUNNING)

    began = time.monotonic()
    await worker.stop(grace=30)

    assert time.monotonic() - began < 5
    assert (await backends.jobs.get(job.id)).state is JobState.SUCCEEDED  # type: ignore[union-attr]


def test_a_worker_refuses_models_it_cannot_run(backends: Backends) -> None:
    with pytest.raises(ValueError, match="elsewhere/model"):
        Worker(backends, builtin_registry(), concurrency=1, models=["elsewhere/model"])
    with pytest.raises(ValueError, match="concurrency"):
        Worker(backends, builtin_registry(), concurrency=0)


async def test_a_worker_takes_only_its_models(
    backends: Backends, start_worker: StartWorker
) -> None:
    await start_worker(models=["local/echo"])
    other = await submit(backends, "local/sleep", JobInput(duration_seconds=0.1))
    mine = await submit(backends, "local/echo", JobInput(prompt="mine"))

    await wait_for_end(backends, mine.id)

    untouched = await backends.jobs.get(other.id)
    assert untouched is not None and untouched.state is JobState.QUEUED
    assert queued(backends, "local/sleep") == 1
