"""jobgate in one process, end to end over real gRPC: every local model, cancel, idempotency,
resumable watches, restarts."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import replace
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from jobgate.v1 import (
    account_pb2,
    account_service_pb2,
    account_service_pb2_grpc,
    admin_service_pb2,
    admin_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
)

from core.settings import Settings
from launcher.embedded import DEV_OWNER, DEV_WELCOME_MICROS
from tests.e2e.helpers import (
    create,
    error_reason,
    events_of,
    states_of,
    wait_for_state,
    watch_all,
)

Job = job_pb2.Job
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fetch(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers["Content-Type"], response.read()


async def test_echo_returns_its_prompt(stub: Any, auth: Any) -> None:
    job = await create(stub, auth, "local/echo", prompt="hello jobgate")
    assert job.state == Job.STATE_QUEUED and job.name.startswith("jobs/")

    messages = await watch_all(stub, auth, job.name)

    done = (await stub.GetJob(job_service_pb2.GetJobRequest(name=job.name), metadata=auth)).job
    assert states_of(messages)[-1] == Job.STATE_SUCCEEDED
    assert done.state == Job.STATE_SUCCEEDED and done.attempt == 1
    assert [o.text for o in done.outputs if o.label == "echo"] == ["hello jobgate"]


async def test_sleep_streams_progress_in_order_and_ends(stub: Any, auth: Any) -> None:
    job = await create(stub, auth, "local/sleep", seconds=0.5)

    messages = await watch_all(stub, auth, job.name)

    assert messages[0].WhichOneof("update") == "job"
    events = events_of(messages)
    first = messages[0].job.event_sequence + 1
    assert [e.sequence for e in events] == list(range(first, first + len(events)))
    fractions = [e.progress.fraction for e in events if e.HasField("progress")]
    assert len(fractions) >= 3 and fractions == sorted(fractions)
    assert states_of(messages)[-1] == Job.STATE_SUCCEEDED


async def test_image_output_downloads_as_png_through_its_url(stub: Any, auth: Any) -> None:
    job = await create(stub, auth, "local/image", prompt="a red fox")
    done = await wait_for_state(stub, auth, job.name, Job.STATE_SUCCEEDED)

    (image,) = [o for o in done.outputs if o.HasField("blob")]
    content_type, body = await asyncio.to_thread(fetch, image.blob.download_uri)

    assert content_type == "image/png" and body.startswith(PNG_MAGIC)
    assert image.blob.size_bytes == len(body)


async def test_fail_ends_failed_with_a_stable_reason(stub: Any, auth: Any) -> None:
    job = await create(stub, auth, "local/fail", prompt="please fail")
    done = await wait_for_state(stub, auth, job.name, Job.STATE_FAILED)

    info = error_details_pb2.ErrorInfo()
    assert done.error.details[0].Unpack(info)
    assert info.reason == "REQUESTED_FAILURE" and info.domain == "jobgate.dev"


async def test_cancel_stops_a_running_job_and_a_queued_one_never_starts(
    settings: Settings, start_service: Any
) -> None:
    _, endpoint = await start_service(replace(settings, worker_concurrency=1))
    auth = (("authorization", f"Bearer {endpoint.api_key}"),)
    async with grpc.aio.insecure_channel(endpoint.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        running = await create(stub, auth, "local/sleep", seconds=60)
        await wait_for_state(stub, auth, running.name, Job.STATE_RUNNING)
        queued = await create(stub, auth, "local/echo", prompt="never")

        cancelled = await stub.CancelJob(
            job_service_pb2.CancelJobRequest(name=queued.name), metadata=auth
        )
        stopped = await stub.CancelJob(
            job_service_pb2.CancelJobRequest(name=running.name), metadata=auth
        )

        assert cancelled.job.state == stopped.job.state == Job.STATE_CANCELLED
        # The worker is free again: a new job runs although the 60 s sleep was holding it.
        after = await create(stub, auth, "local/echo", prompt="next")
        await wait_for_state(stub, auth, after.name, Job.STATE_SUCCEEDED)
        never = await stub.GetJob(job_service_pb2.GetJobRequest(name=queued.name), metadata=auth)
        assert never.job.attempt == 0 and never.job.state == Job.STATE_CANCELLED
        final = await stub.GetJob(job_service_pb2.GetJobRequest(name=running.name), metadata=auth)
        assert final.job.state == Job.STATE_CANCELLED


async def test_same_request_id_returns_the_same_job(stub: Any, auth: Any) -> None:
    first, second = await asyncio.gather(
        create(stub, auth, "local/echo", prompt="once", request_id="req-42"),
        create(stub, auth, "local/echo", prompt="once", request_id="req-42"),
    )
    assert first.name == second.name

    listed = await stub.ListJobs(job_service_pb2.ListJobsRequest(), metadata=auth)
    assert [j.name for j in listed.jobs] == [first.name]


async def test_a_watch_resumed_after_a_dropped_connection_misses_and_repeats_nothing(
    endpoint: Any, auth: Any
) -> None:
    seen: list[int] = []
    async with grpc.aio.insecure_channel(endpoint.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        job = await create(stub, auth, "local/sleep", seconds=1.0)
        stream = stub.WatchJob(job_service_pb2.WatchJobRequest(name=job.name), metadata=auth)
        async for message in stream:
            if message.WhichOneof("update") == "job":
                seen.append(message.job.event_sequence)
            elif message.WhichOneof("update") == "event":
                seen.append(message.event.sequence)
                if message.event.HasField("progress"):
                    break
    # The channel is closed mid-stream: the connection is gone. Resume on a new one.
    async with grpc.aio.insecure_channel(endpoint.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        rest = await watch_all(stub, auth, job.name, after=seen[-1])

    seen += [e.sequence for e in events_of(rest)]
    assert seen == list(range(seen[0], seen[-1] + 1))
    assert states_of(rest)[-1] == Job.STATE_SUCCEEDED


async def test_a_restart_keeps_every_job_and_finishes_the_unfinished(
    settings: Settings, start_service: Any
) -> None:
    settings = replace(settings, worker_concurrency=1, shutdown_grace_seconds=0.2)
    first, endpoint = await start_service(settings)
    auth = (("authorization", f"Bearer {endpoint.api_key}"),)
    async with grpc.aio.insecure_channel(endpoint.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        done = await create(stub, auth, "local/echo", prompt="before")
        await wait_for_state(stub, auth, done.name, Job.STATE_SUCCEEDED)
        interrupted = await create(stub, auth, "local/sleep", seconds=2)
        await wait_for_state(stub, auth, interrupted.name, Job.STATE_RUNNING)
        queued = await create(stub, auth, "local/echo", prompt="queued")
    await first.stop()

    _, endpoint = await start_service(settings)
    assert endpoint.api_key == auth[0][1].removeprefix("Bearer ")
    async with grpc.aio.insecure_channel(endpoint.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        listed = await stub.ListJobs(job_service_pb2.ListJobsRequest(), metadata=auth)
        assert [j.name for j in listed.jobs] == [queued.name, interrupted.name, done.name]
        finished = await wait_for_state(stub, auth, queued.name, Job.STATE_SUCCEEDED)
        resumed = await wait_for_state(stub, auth, interrupted.name, Job.STATE_SUCCEEDED)

    assert finished.attempt == 1
    assert resumed.attempt == 2


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [((), "API_KEY_MISSING"), ((("authorization", "Bearer jg_nope_nope"),), "API_KEY_INVALID")],
)
async def test_calls_without_a_valid_key_are_unauthenticated(
    stub: Any, metadata: Any, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListJobs(job_service_pb2.ListJobsRequest(), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(caught.value) == reason


async def test_the_dev_key_is_bootstrapped_once_with_both_scopes_and_a_welcome_balance(
    settings: Settings, start_service: Any
) -> None:
    first, endpoint = await start_service(settings)
    await first.stop()
    _, again = await start_service(settings)

    auth = (("authorization", f"Bearer {again.api_key}"),)
    async with grpc.aio.insecure_channel(again.address) as channel:
        balance = await account_service_pb2_grpc.AccountServiceStub(channel).GetBalance(
            account_service_pb2.GetBalanceRequest(), metadata=auth
        )
        keys = await admin_service_pb2_grpc.AdminServiceStub(channel).ListApiKeys(
            admin_service_pb2.ListApiKeysRequest(user=f"users/{DEV_OWNER}"), metadata=auth
        )

    assert again.api_key == endpoint.api_key
    assert balance.balance.available_micros == DEV_WELCOME_MICROS
    assert [(list(k.scopes), k.revoked) for k in keys.api_keys] == [
        ([account_pb2.API_KEY_SCOPE_JOBS, account_pb2.API_KEY_SCOPE_ADMIN], False)
    ]
