"""Helpers for the worker tests: jobs created and queued the way the server does it, waits with
timeouts, and small test providers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

from core.backends import Backends
from core.catalog import InputSpec, ModelSpec, OutputKind
from core.jobs import Job, JobEvent, JobInput, JobState, NewJob
from core.ports import JobMessage
from core.providers.base import RunContext

OWNER = "tenant-a"
TIMEOUT = 10.0
POLL_SECONDS = 0.005


async def create_job(backends: Backends, model: str, job_input: JobInput | None = None) -> Job:
    new = NewJob(
        id=uuid.uuid4().hex,
        owner=OWNER,
        model=model,
        input=job_input or JobInput(),
        create_time=datetime.now(UTC),
    )
    job, created = await backends.jobs.create(new)
    assert created
    return job


async def enqueue(backends: Backends, job: Job) -> None:
    await backends.broker.publish(JobMessage(job_id=job.id, model=job.model))


async def submit(backends: Backends, model: str, job_input: JobInput | None = None) -> Job:
    """What CreateJob does: record the job, then queue a reference to it."""
    job = await create_job(backends, model, job_input)
    await enqueue(backends, job)
    return job


async def wait_for(backends: Backends, job_id: str, done: Callable[[Job], bool]) -> Job:
    """The job once `done(job)` holds, woken by its events rather than polling."""
    async with asyncio.timeout(TIMEOUT), backends.events.subscribe(job_id) as events:
        job = await backends.jobs.get(job_id)
        assert job is not None
        while not done(job):
            await anext(events)
            job = await backends.jobs.get(job_id)
            assert job is not None
    return job


async def wait_for_state(backends: Backends, job_id: str, state: JobState) -> Job:
    return await wait_for(backends, job_id, lambda job: job.state is state)


async def wait_for_end(backends: Backends, job_id: str) -> Job:
    return await wait_for(backends, job_id, lambda job: job.state.terminal)


async def until(condition: Callable[[], bool]) -> None:
    """Polls: for what announces no event, like a provider starting or a broker's queue."""
    for _ in range(int(TIMEOUT / POLL_SECONDS)):
        if condition():
            return
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"not true within {TIMEOUT} s")


async def stored_events(backends: Backends, job_id: str) -> list[JobEvent]:
    return await backends.jobs.events(job_id, after=0)


@contextlib.asynccontextmanager
async def bus_events(backends: Backends, job_id: str) -> AsyncIterator[list[JobEvent]]:
    """Every event of the job published on the event bus while the block runs."""
    seen: list[JobEvent] = []
    async with backends.events.subscribe(job_id) as events:

        async def collect() -> None:
            async for event in events:
                seen.append(event)

        task = asyncio.create_task(collect())
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def spec_for(model_id: str) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        display_name=model_id,
        description="a model for tests",
        inputs=(InputSpec("prompt"), InputSpec("files"), InputSpec("options")),
        outputs=(OutputKind.TEXT,),
    )


class FunctionProvider:
    """Serves one test model by calling `run`."""

    def __init__(self, model_id: str, run: Callable[[RunContext], Awaitable[None]]) -> None:
        self.models = (spec_for(model_id),)
        self._run = run

    async def run(self, ctx: RunContext) -> None:
        await self._run(ctx)


class Gate:
    """A job body that holds until the test opens the gate, counting how many hold at once."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.entered = 0
        self.holding = 0
        self.most_at_once = 0

    async def __call__(self, ctx: RunContext) -> None:
        self.entered += 1
        self.holding += 1
        self.most_at_once = max(self.most_at_once, self.holding)
        try:
            await self.opened.wait()
        finally:
            self.holding -= 1
