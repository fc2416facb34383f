"""CreateJob, GetJob, ListJobs, CancelJob and ListModels through real gRPC on the real embedded
backends."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import json_format
from jobgate.v1 import job_pb2, job_service_pb2, model_pb2

from core.backends import Backends
from core.jobs import JobState, Output, StateChanged
from core.ports import JobMessage
from tests.server.support import (
    ActingWorker,
    Metadata,
    Stub,
    create,
    job_id,
    job_request,
    rich_error,
)

Job = job_pb2.Job


async def queued_messages(backends: Backends, count: int) -> list[JobMessage]:
    """The next `count` messages on the broker, acknowledged; fails if they do not come."""
    messages = []
    async with backends.broker.consume(None, prefetch=count + 1) as deliveries:
        for _ in range(count):
            delivery = await asyncio.wait_for(anext(deliveries), timeout=2)
            messages.append(delivery.message)
            await delivery.ack()
    return messages


async def nothing_more_queued(backends: Backends) -> bool:
    async with backends.broker.consume(None, prefetch=1) as deliveries:
        try:
            await asyncio.wait_for(anext(deliveries), timeout=0.2)
        except TimeoutError:
            return True
    return False


async def get(stub: Stub, auth: Metadata, name: str) -> job_pb2.Job:
    return (await stub.GetJob(job_service_pb2.GetJobRequest(name=name), metadata=auth)).job


async def list_names(stub: Stub, auth: Metadata, filter: str = "") -> list[str]:
    request = job_service_pb2.ListJobsRequest(filter=filter)
    return [j.name for j in (await stub.ListJobs(request, metadata=auth)).jobs]


async def test_a_created_job_is_recorded_queued_and_queued_on_the_broker(
    stub: Stub, alice: Metadata, backends: Backends
) -> None:
    request = job_request(prompt="hello")
    request.job.input.options.update({"count": 3, "ratio": 0.5, "tags": ["a", "b"]})
    before = datetime.now(UTC)

    job = (await stub.CreateJob(request, metadata=alice)).job

    assert re.fullmatch(r"jobs/[0-9a-f]{32}", job.name)
    assert job.state == Job.STATE_QUEUED and job.attempt == 0 and job.event_sequence == 1
    assert job.model == "local/echo" and job.input.prompt == "hello"
    assert json_format.MessageToDict(job.input.options) == {
        "count": 3,
        "ratio": 0.5,
        "tags": ["a", "b"],
    }
    assert (
        before - timedelta(seconds=1)
        < job.create_time.ToDatetime(UTC)
        < before + timedelta(seconds=5)
    )
    assert await get(stub, alice, job.name) == job
    stored = await backends.jobs.get(job_id(job.name))
    assert stored is not None and stored.owner == "alice" and stored.input.options["count"] == 3
    assert await queued_messages(backends, 1) == [JobMessage(job_id(job.name), "local/echo")]


async def test_job_ids_sort_by_creation(stub: Stub, alice: Metadata) -> None:
    names = [await create(stub, alice) for _ in range(5)]

    assert names == sorted(names) and len(set(names)) == 5


async def test_input_files_are_recorded_with_what_the_store_knows_of_them(
    stub: Stub, alice: Metadata, backends: Backends
) -> None:
    ref = await backends.blobs.put("tenants/alice/in.png", b"\x89PNG...", "image/png")

    job = (
        await stub.CreateJob(
            job_request("test/files", files=["tenants/alice/in.png"]), metadata=alice
        )
    ).job

    (file,) = job.input.files
    assert (file.key, file.content_type, file.size_bytes, file.sha256) == (
        ref.key,
        "image/png",
        ref.size_bytes,
        ref.sha256,
    )


async def test_the_same_request_id_gives_the_same_job_even_when_sent_at_once(
    stub: Stub, alice: Metadata, backends: Backends
) -> None:
    request = job_request(prompt="once", request_id="req-42")

    responses = await asyncio.gather(*(stub.CreateJob(request, metadata=alice) for _ in range(8)))

    assert len({r.job.name for r in responses}) == 1
    assert await list_names(stub, alice) == [responses[0].job.name]
    assert len(await queued_messages(backends, 1)) == 1
    assert await nothing_more_queued(backends)


async def test_a_request_id_belongs_to_its_caller(
    stub: Stub, alice: Metadata, bob: Metadata
) -> None:
    request = job_request(prompt="same", request_id="shared-id")

    theirs = (await stub.CreateJob(request, metadata=alice)).job
    mine = (await stub.CreateJob(request, metadata=bob)).job

    assert theirs.name != mine.name


async def test_each_caller_sees_only_their_own_jobs(
    stub: Stub, alice: Metadata, bob: Metadata
) -> None:
    alices = [await create(stub, alice) for _ in range(2)]
    bobs = [await create(stub, bob)]

    assert await list_names(stub, alice) == alices[::-1]
    assert await list_names(stub, bob) == bobs


async def test_jobs_list_newest_first_in_pages(stub: Stub, alice: Metadata) -> None:
    names = [await create(stub, alice) for _ in range(5)]

    pages, token = [], ""
    while True:
        request = job_service_pb2.ListJobsRequest(page_size=2, page_token=token)
        response = await stub.ListJobs(request, metadata=alice)
        pages.append([j.name for j in response.jobs])
        token = response.next_page_token
        if not token:
            break

    assert pages == [names[4:2:-1], names[2:0:-1], names[:1]]


async def test_a_full_last_page_has_no_next_token(stub: Stub, alice: Metadata) -> None:
    for _ in range(2):
        await create(stub, alice)

    response = await stub.ListJobs(job_service_pb2.ListJobsRequest(page_size=2), metadata=alice)

    assert len(response.jobs) == 2 and response.next_page_token == ""


async def test_jobs_filter_by_state_and_model(
    stub: Stub, alice: Metadata, worker: ActingWorker
) -> None:
    first_echo = await create(stub, alice)
    sleep = await create(stub, alice, job_request("local/sleep", seconds=5))
    second_echo = await create(stub, alice)
    await worker.start(first_echo)

    assert await list_names(stub, alice, filter="state = RUNNING") == [first_echo]
    assert await list_names(stub, alice, filter="state = STATE_QUEUED") == [second_echo, sleep]
    assert await list_names(stub, alice, filter='model = "local/sleep"') == [sleep]
    assert await list_names(stub, alice, filter="state=QUEUED AND model=local/echo") == [
        second_echo
    ]


async def test_a_filtered_list_pages_through_its_own_matches(stub: Stub, alice: Metadata) -> None:
    echoes = []
    for _ in range(3):
        echoes.append(await create(stub, alice))
        await create(stub, alice, job_request("local/sleep", seconds=1))

    first = await stub.ListJobs(
        job_service_pb2.ListJobsRequest(page_size=2, filter="model = local/echo"), metadata=alice
    )
    second = await stub.ListJobs(
        job_service_pb2.ListJobsRequest(
            page_size=2, filter="model = local/echo", page_token=first.next_page_token
        ),
        metadata=alice,
    )

    assert [j.name for j in (*first.jobs, *second.jobs)] == echoes[::-1]
    assert second.next_page_token == ""


async def test_cancelling_a_queued_job_means_it_never_starts(
    stub: Stub, alice: Metadata, backends: Backends
) -> None:
    name = await create(stub, alice)

    cancelled = (
        await stub.CancelJob(job_service_pb2.CancelJobRequest(name=name), metadata=alice)
    ).job

    assert cancelled.state == Job.STATE_CANCELLED and cancelled.attempt == 0
    assert cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert "cancelled by its owner" in cancelled.error.message
    assert await backends.jobs.claim(job_id(name)) is None
    assert (await get(stub, alice, name)).state == Job.STATE_CANCELLED


async def test_cancelling_a_running_job_tells_its_worker_through_the_bus(
    stub: Stub, alice: Metadata, backends: Backends, worker: ActingWorker
) -> None:
    name = await create(stub, alice)
    running = await worker.start(name)

    async with backends.events.subscribe(job_id(name)) as events:
        await stub.CancelJob(job_service_pb2.CancelJobRequest(name=name), metadata=alice)
        event = await asyncio.wait_for(anext(events), timeout=2)

    assert isinstance(event.payload, StateChanged)
    assert event.payload.state is JobState.CANCELLED
    assert event.attempt == running.attempt
    # The stopped attempt can record nothing more.
    assert await backends.jobs.record(job_id(name), running.attempt, Output("x", text="")) is None


async def test_cancelling_a_finished_job_fails_its_precondition(
    stub: Stub, alice: Metadata, worker: ActingWorker
) -> None:
    name = await create(stub, alice)
    job = await worker.start(name)
    await worker.succeed(name, job.attempt)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelJob(job_service_pb2.CancelJobRequest(name=name), metadata=alice)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.info.reason == "JOB_FINISHED" and "SUCCEEDED" in error.message
    assert (await get(stub, alice, name)).state == Job.STATE_SUCCEEDED


async def test_a_blob_output_comes_with_a_working_download_url(
    stub: Stub, alice: Metadata, backends: Backends, worker: ActingWorker
) -> None:
    name = await create(stub, alice)
    job = await worker.start(name)
    ref = await backends.blobs.put(f"jobs/{job.id}/out.png", b"picture", "image/png")
    await worker.output(name, job.attempt, Output("image", blob=ref))
    await worker.output(name, job.attempt, Output("meta", json={"width": 2, "ok": True}))
    await worker.succeed(name, job.attempt)

    done = await get(stub, alice, name)

    image, meta = done.outputs
    expires = image.blob.download_expire_time.ToDatetime(UTC) - datetime.now(UTC)
    assert timedelta(seconds=850) < expires <= timedelta(seconds=900)
    body = await asyncio.to_thread(fetch, image.blob.download_uri)
    assert body == b"picture" and image.blob.size_bytes == len(body)
    assert json_format.MessageToDict(meta.json) == {"width": 2, "ok": True}


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


async def test_models_list_in_catalog_order_with_what_they_take_and_cost(
    stub: Stub, alice: Metadata, backends: Backends
) -> None:
    response = await stub.ListModels(job_service_pb2.ListModelsRequest(), metadata=alice)

    assert [m.id for m in response.models] == [spec.id for spec in backends.catalog]
    assert response.next_page_token == ""
    sleep = next(m for m in response.models if m.id == "local/sleep")
    assert sleep.provider == "local" and sleep.display_name
    assert ("duration", True) in [(i.field, i.required) for i in sleep.inputs]
    assert list(sleep.outputs) == [model_pb2.Model.OUTPUT_KIND_TEXT]
    assert sleep.price.currency_code == "USD" and sleep.price.per_job_micros > 0
    image = next(m for m in response.models if m.id == "local/image")
    assert image.price.unit == model_pb2.Price.UNIT_IMAGE


async def test_models_page_through_the_catalog(
    stub: Stub, alice: Metadata, backends: Backends
) -> None:
    ids, token = [], ""
    while True:
        request = job_service_pb2.ListModelsRequest(page_size=2, page_token=token)
        response = await stub.ListModels(request, metadata=alice)
        assert len(response.models) <= 2
        ids += [m.id for m in response.models]
        token = response.next_page_token
        if not token:
            break

    assert ids == [spec.id for spec in backends.catalog]
