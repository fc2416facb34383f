"""RunJob: CreateJob and WatchJob in one call. The stream starts with the job as recorded and
queued, then carries every event to the end; a retried request_id streams the first job."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from jobgate.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

from core.backends import Backends
from tests.server.conftest import StartServer
from tests.server.support import (
    ActingWorker,
    Metadata,
    Stub,
    job_request,
    kinds,
    rich_error,
    sequences,
    watch,
)
from tests.server.test_jobs import nothing_more_queued, queued_messages
from tests.server.test_watch import next_message, until_end

Job = job_pb2.Job


def open_run(stub: Stub, auth: Metadata, request_id: str = "", prompt: str = "hi") -> Any:
    return stub.RunJob(job_request(prompt=prompt, request_id=request_id), metadata=auth, timeout=10)


async def test_a_run_sends_the_queued_job_then_every_event_and_ends_after_the_last(
    stub: Stub, alice: Metadata, worker: ActingWorker
) -> None:
    call = open_run(stub, alice, prompt="hello")
    first = await next_message(call)
    position = await next_message(call)

    name = first.job.name
    job = await worker.start(name)
    await worker.progress(name, job.attempt, 0.5)
    await worker.succeed(name, job.attempt)
    rest = await until_end(call)

    assert first.job.state == Job.STATE_QUEUED and first.job.event_sequence == 1
    assert first.job.model == "local/echo" and first.job.input.prompt == "hello"
    assert position.queue_position.jobs_ahead == 0
    assert kinds(rest) == ["event"] * 3 and sequences(rest) == [2, 3, 4]
    assert rest[-1].event.state_change.state == Job.STATE_SUCCEEDED
    assert await call.code() == grpc.StatusCode.OK


async def test_a_run_is_recorded_and_queued_like_a_created_job(
    stub: Stub, alice: Metadata, backends: Backends
) -> None:
    call = open_run(stub, alice)
    first = await next_message(call)
    call.cancel()

    got = await stub.GetJob(job_service_pb2.GetJobRequest(name=first.job.name), metadata=alice)
    queued = await queued_messages(backends, 1)

    assert got.job.name == first.job.name and got.job.state == Job.STATE_QUEUED
    assert [m.job_id for m in queued] == [first.job.name.removeprefix("jobs/")]
    assert await nothing_more_queued(backends)


async def test_a_run_retried_with_its_request_id_streams_the_first_job(
    stub: Stub, alice: Metadata, worker: ActingWorker
) -> None:
    first_call = open_run(stub, alice, request_id="run-7")
    first = await next_message(first_call)
    first_call.cancel()
    name = first.job.name
    job = await worker.start(name)
    await worker.succeed(name, job.attempt)

    again = [m async for m in open_run(stub, alice, request_id="run-7")]
    listed = await stub.ListJobs(job_service_pb2.ListJobsRequest(), metadata=alice)

    assert kinds(again) == ["job"] and again[0].job.name == name
    assert again[0].job.state == Job.STATE_SUCCEEDED
    assert [j.name for j in listed.jobs] == [name]


async def test_a_broken_run_resumes_with_watch_job_after_the_last_event_seen(
    stub: Stub, alice: Metadata, worker: ActingWorker
) -> None:
    call = open_run(stub, alice)
    first = await next_message(call)
    call.cancel()
    name = first.job.name
    job = await worker.start(name)
    await worker.succeed(name, job.attempt)

    missed = await watch(stub, alice, name, after=first.job.event_sequence)

    assert sequences(missed) == [2, 3]
    assert missed[-1].event.state_change.state == Job.STATE_SUCCEEDED


async def test_an_invalid_run_fails_before_anything_is_recorded(
    stub: Stub, alice: Metadata
) -> None:
    call = stub.RunJob(job_request("local/nope", prompt="x"), metadata=alice, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    listed = await stub.ListJobs(job_service_pb2.ListJobsRequest(), metadata=alice)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.info.reason == "UNKNOWN_MODEL"
    assert error.bad_fields == ("job.model",)
    assert list(listed.jobs) == []


async def test_draining_ends_run_streams_so_clients_resume_elsewhere(
    start_server: StartServer, alice: Metadata
) -> None:
    running = await start_server()
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        run = open_run(stub, alice)
        await next_message(run)
        stopping = asyncio.create_task(running.server.stop(grace=5))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await until_end(run)
        await stopping

    ended = rich_error(caught.value)
    assert ended.code == grpc.StatusCode.UNAVAILABLE and ended.info.reason == "SHUTTING_DOWN"
