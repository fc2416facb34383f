"""WatchJob: a snapshot or the missed events, then every live event in order with no gap and no
repeat, queue positions while queued, keepalives while idle, and a clean end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from jobgate.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

from core.backends import Backends
from tests.server.conftest import Running, StartServer
from tests.server.support import (
    ActingWorker,
    Metadata,
    Stub,
    WatchResponse,
    create,
    job_id,
    job_request,
    kinds,
    rich_error,
    sequences,
    watch,
)

Job = job_pb2.Job


def open_watch(stub: Stub, auth: Metadata, name: str, after: int = 0, timeout: float = 10) -> Any:
    request = job_service_pb2.WatchJobRequest(name=name, after_sequence=after)
    return stub.WatchJob(request, metadata=auth, timeout=timeout)


async def next_message(call: Any, within: float = 3) -> WatchResponse:
    message = await asyncio.wait_for(call.read(), within)
    assert message is not grpc.aio.EOF, "the stream ended"
    return message  # type: ignore[no-any-return]


async def until_end(call: Any, within: float = 5) -> list[WatchResponse]:
    """The rest of the stream (read() only: grpc.aio forbids mixing it with iteration)."""
    messages = []
    while (message := await asyncio.wait_for(call.read(), within)) is not grpc.aio.EOF:
        messages.append(message)
    return messages


async def eventually(condition: Callable[[], bool], within: float = 3) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def finished_job(stub: Stub, auth: Metadata, worker: ActingWorker) -> str:
    """A job with events 1 QUEUED, 2 RUNNING, 3 progress, 4 log, 5 SUCCEEDED."""
    name = await create(stub, auth)
    job = await worker.start(name)
    await worker.progress(name, job.attempt, 0.5)
    await worker.log(name, job.attempt, "half way")
    await worker.succeed(name, job.attempt)
    return name


async def test_a_watch_sends_the_job_then_every_event_in_order_and_ends_after_the_last(
    stub: Stub, alice: Metadata, worker: ActingWorker
) -> None:
    name = await create(stub, alice)
    call = open_watch(stub, alice, name)
    snapshot = await next_message(call)
    position = await next_message(call)

    job = await worker.start(name)
    await worker.progress(name, job.attempt, 0.5)
    await worker.log(name, job.attempt, "half way")
    await worker.succeed(name, job.attempt)
    rest = await until_end(call)

    assert snapshot.job.name == name and snapshot.job.state == Job.STATE_QUEUED
    assert snapshot.job.event_sequence == 1
    assert position.queue_position.jobs_ahead == 0
    assert kinds(rest) == ["event"] * 4 and sequences(rest) == [2, 3, 4, 5]
    started, progress, log, succeeded = (m.event for m in rest)
    assert started.state_change.state == Job.STATE_RUNNING and started.attempt == 1
    assert progress.progress.fraction == 0.5 and log.log.message == "half way"
    assert log.log.level == job_pb2.LogEntry.LEVEL_INFO
    assert succeeded.state_change.state == Job.STATE_SUCCEEDED
    assert await call.code() == grpc.StatusCode.OK


async def test_watching_a_finished_job_sends_it_and_ends(
    stub: Stub, alice: Metadata, worker: ActingWorker
) -> None:
    name = await finished_job(stub, alice, worker)

    messages = await watch(stub, alice, name)

    assert kinds(messages) == ["job"]
    assert messages[0].job.state == Job.STATE_SUCCEEDED and messages[0].job.event_sequence == 5


async def test_a_resumed_watch_gets_exactly_the_missed_events(
    stub: Stub, alice: Metadata, worker: ActingWorker
) -> None:
    name = await finished_job(stub, alice, worker)

    missed = await watch(stub, alice, name, after=2)
    nothing = await watch(stub, alice, name, after=5)

    assert kinds(missed) == ["event"] * 3 and sequences(missed) == [3, 4, 5]
    assert missed[-1].event.state_change.state == Job.STATE_SUCCEEDED
    assert nothing == []


async def test_a_resumed_watch_goes_on_live_after_the_missed_events(
    stub: Stub, alice: Metadata, worker: ActingWorker
) -> None:
    name = await create(stub, alice)
    job = await worker.start(name)
    await worker.progress(name, job.attempt, 0.25)

    call = open_watch(stub, alice, name, after=2)
    missed = await next_message(call)
    await worker.progress(name, job.attempt, 0.75)
    await worker.succeed(name, job.attempt)
    live = await until_end(call)

    assert missed.event.sequence == 3 and missed.event.progress.fraction == 0.25
    assert sequences(live) == [4, 5] and kinds(live) == ["event", "event"]


async def test_an_event_lost_on_the_bus_is_filled_in_from_the_store(
    stub: Stub, alice: Metadata, worker: ActingWorker
) -> None:
    name = await create(stub, alice)
    job = await worker.start(name)
    call = open_watch(stub, alice, name)
    await next_message(call)  # the snapshot: the stream is subscribed

    await worker.progress(name, job.attempt, 0.3, publish=False)
    await worker.progress(name, job.attempt, 0.6)
    await worker.succeed(name, job.attempt)
    rest = await until_end(call)

    assert sequences(rest) == [3, 4, 5]
    assert [m.event.progress.fraction for m in rest[:2]] == [
        job_pb2.Progress(fraction=0.3).fraction,
        job_pb2.Progress(fraction=0.6).fraction,
    ]


async def test_an_event_seen_twice_on_the_bus_is_sent_once(
    stub: Stub, alice: Metadata, worker: ActingWorker, backends: Backends
) -> None:
    name = await create(stub, alice)
    job = await worker.start(name)
    call = open_watch(stub, alice, name)
    await next_message(call)

    progress = await worker.progress(name, job.attempt, 0.5)
    await backends.events.publish(progress)
    await worker.succeed(name, job.attempt)
    rest = await until_end(call)

    assert sequences(rest) == [3, 4]


async def test_an_idle_stream_gets_keepalives(
    start_server: StartServer, alice: Metadata, worker: ActingWorker
) -> None:
    running = await start_server(keepalive_seconds=0.2)
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        name = await create(stub, alice)
        await worker.start(name)
        call = open_watch(stub, alice, name)
        await next_message(call)
        first = await next_message(call, within=1)
        second = await next_message(call, within=1)
        call.cancel()

    for message in (first, second):
        assert message.WhichOneof("update") == "keepalive"
        assert message.keepalive.last_sequence == 2
        age = datetime.now(UTC) - message.keepalive.time.ToDatetime(UTC)
        assert timedelta(0) <= age < timedelta(seconds=2)


async def test_a_silent_stream_finds_events_the_bus_lost(
    start_server: StartServer, alice: Metadata, worker: ActingWorker
) -> None:
    running = await start_server(keepalive_seconds=0.3)
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        name = await create(stub, alice)
        job = await worker.start(name)
        call = open_watch(stub, alice, name)
        await next_message(call)

        await worker.progress(name, job.attempt, 0.5, publish=False)
        found = await next_message(call, within=1)
        await worker.succeed(name, job.attempt, publish=False)
        rest = await until_end(call, within=2)

    assert found.event.sequence == 3 and found.event.progress.fraction == 0.5
    assert sequences(rest) == [4]


async def test_a_queued_job_hears_where_it_stands_until_it_starts(
    stub: Stub, alice: Metadata, worker: ActingWorker
) -> None:
    first, _, mine = [await create(stub, alice) for _ in range(3)]
    await create(stub, alice, job_request("local/sleep", seconds=1))  # another model's queue
    call = open_watch(stub, alice, mine)
    snapshot = await next_message(call)
    initially = await next_message(call)

    await worker.start(first)
    moved_up = await next_message(call, within=2.5)
    job = await worker.start(mine)
    await worker.succeed(mine, job.attempt)
    rest = await until_end(call)

    assert snapshot.job.state == Job.STATE_QUEUED
    assert initially.queue_position.jobs_ahead == 2
    assert moved_up.queue_position.jobs_ahead == 1
    assert kinds(rest) == ["event", "event"]
    assert rest[0].event.state_change.state == Job.STATE_RUNNING


async def test_a_job_that_starts_within_a_second_is_never_counted_in_its_queue(
    stub: Stub, alice: Metadata, worker: ActingWorker
) -> None:
    name = await create(stub, alice)
    call = open_watch(stub, alice, name)
    snapshot = await next_message(call)

    job = await worker.start(name)
    await worker.succeed(name, job.attempt)
    rest = await until_end(call)

    assert snapshot.job.state == Job.STATE_QUEUED
    assert kinds(rest) == ["event", "event"]


async def test_a_job_that_has_waited_a_second_hears_its_position_at_once(
    stub: Stub, alice: Metadata
) -> None:
    name = await create(stub, alice)
    await asyncio.sleep(1.1)

    call = open_watch(stub, alice, name)
    await next_message(call)
    position = await next_message(call, within=0.5)
    call.cancel()

    assert position.queue_position.jobs_ahead == 0


async def test_a_watch_deadline_is_honoured_and_the_stream_cleaned_up(
    stub: Stub, alice: Metadata, running: Running
) -> None:
    name = await create(stub, alice)
    started = time.monotonic()

    call = open_watch(stub, alice, name, timeout=0.5)
    messages = []
    try:
        async for message in call:
            messages.append(message)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert kinds(messages) == ["job"]  # gone before the job waited long enough to be counted
    assert time.monotonic() - started < 2
    await eventually(lambda: running.server.watcher.open_streams == 0)


async def test_a_watch_the_client_cancels_is_cleaned_up(
    stub: Stub, alice: Metadata, running: Running, backends: Backends
) -> None:
    name = await create(stub, alice)
    call = open_watch(stub, alice, name)
    await next_message(call)
    assert running.server.watcher.open_streams == 1

    call.cancel()

    await eventually(lambda: running.server.watcher.open_streams == 0)
    assert backends.events.subscriber_count(job_id(name)) == 0  # type: ignore[attr-defined]


async def test_draining_ends_watch_streams_so_clients_resume_elsewhere(
    start_server: StartServer, alice: Metadata
) -> None:
    running = await start_server()
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        name = await create(stub, alice)
        call = open_watch(stub, alice, name)
        await next_message(call)
        started = time.monotonic()

        stopping = asyncio.create_task(running.server.stop(grace=5))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await until_end(call)
        await stopping

    ended = rich_error(caught.value)
    assert ended.code == grpc.StatusCode.UNAVAILABLE and ended.info.reason == "SHUTTING_DOWN"
    assert time.monotonic() - started < 2
