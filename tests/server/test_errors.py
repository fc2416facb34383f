"""Every way a call can go wrong answers with the right code, a clear message and a rich status
(ErrorInfo reason, BadRequest field) that a program can act on."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from jobgate.v1 import job_pb2, job_service_pb2

from core.backends import Backends
from tests.server.support import Metadata, RichError, Stub, create, job_request, rich_error

Code = grpc.StatusCode


async def failure(call: Awaitable[Any]) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return rich_error(caught.value)


async def stream_failure(call: Any) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    return rich_error(caught.value)


# --- API keys ---------------------------------------------------------------------------------


async def test_a_call_without_a_key_is_told_how_to_send_one(stub: Stub) -> None:
    error = await failure(stub.ListJobs(job_service_pb2.ListJobsRequest()))

    assert error.code == Code.UNAUTHENTICATED and error.info.reason == "API_KEY_MISSING"
    assert "authorization: Bearer" in error.message


@pytest.mark.parametrize("value", ["jg_123", "Basic dXNlcjpwdw==", "Bearer ", "Bearer"])
async def test_an_authorization_that_is_not_a_bearer_key_counts_as_missing(
    stub: Stub, value: str
) -> None:
    request = job_service_pb2.ListJobsRequest()
    error = await failure(stub.ListJobs(request, metadata=(("authorization", value),)))

    assert error.code == Code.UNAUTHENTICATED and error.info.reason == "API_KEY_MISSING"


@pytest.mark.parametrize("key", ["jg_nope_nope", "jg_0123456789ab_wrongsecret", "x" * 500])
async def test_an_unknown_key_is_invalid(stub: Stub, key: str) -> None:
    request = job_service_pb2.ListJobsRequest()
    error = await failure(stub.ListJobs(request, metadata=(("authorization", f"Bearer {key}"),)))

    assert error.code == Code.UNAUTHENTICATED and error.info.reason == "API_KEY_INVALID"
    assert key not in error.message


async def test_the_bearer_scheme_is_case_insensitive(stub: Stub, backends: Backends) -> None:
    key = await backends.accounts.create_key("carol")
    listed = await stub.ListJobs(
        job_service_pb2.ListJobsRequest(), metadata=(("authorization", f"bearer {key}"),)
    )
    assert list(listed.jobs) == []


async def test_a_streaming_call_is_checked_like_a_unary_one(stub: Stub) -> None:
    request = job_service_pb2.WatchJobRequest(name="jobs/anything")
    missing = await stream_failure(stub.WatchJob(request))
    invalid = await stream_failure(
        stub.WatchJob(request, metadata=(("authorization", "Bearer jg_nope_nope"),))
    )

    assert missing.code == invalid.code == Code.UNAUTHENTICATED
    assert (missing.info.reason, invalid.info.reason) == ("API_KEY_MISSING", "API_KEY_INVALID")


# --- CreateJob ----------------------------------------------------------------------------------


async def test_an_unknown_model_is_an_invalid_job_model(stub: Stub, alice: Metadata) -> None:
    error = await failure(stub.CreateJob(job_request("local/nope", prompt="x"), metadata=alice))

    assert error.code == Code.INVALID_ARGUMENT and error.info.reason == "UNKNOWN_MODEL"
    assert error.bad_fields == ("job.model",) and "local/nope" in error.message


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (job_service_pb2.CreateJobRequest(), "job"),
        (job_request(""), "job.model"),
        (job_request("local/echo"), "job.input.prompt"),
        (job_request("local/sleep"), "job.input.duration"),
        (job_request("local/sleep", seconds=-1), "job.input.duration"),
        (job_request("local/echo", prompt="x", seconds=1), "job.input.duration"),
        (job_request("local/echo", prompt="x", request_id="r" * 129), "request_id"),
    ],
)
async def test_a_bad_field_is_named_in_a_bad_request(
    stub: Stub, alice: Metadata, request_: job_service_pb2.CreateJobRequest, field: str
) -> None:
    error = await failure(stub.CreateJob(request_, metadata=alice))

    assert error.code == Code.INVALID_ARGUMENT and error.info.reason == "INVALID_ARGUMENT"
    assert error.bad_fields == (field,)


async def test_an_input_file_must_be_a_stored_blob_of_the_caller(
    stub: Stub, alice: Metadata, backends: Backends
) -> None:
    await backends.blobs.put("tenants/alice/in.png", b"png", "image/png")
    await backends.blobs.put("tenants/bob/in.png", b"png", "image/png")

    missing = await failure(
        stub.CreateJob(
            job_request("test/files", files=["tenants/alice/in.png", "tenants/alice/gone.png"]),
            metadata=alice,
        )
    )
    foreign = await failure(
        stub.CreateJob(job_request("test/files", files=["tenants/bob/in.png"]), metadata=alice)
    )
    malformed = await failure(
        stub.CreateJob(job_request("test/files", files=["tenants/alice/../x"]), metadata=alice)
    )

    assert missing.info.reason == foreign.info.reason == malformed.info.reason == "BLOB_NOT_FOUND"
    assert missing.code == foreign.code == malformed.code == Code.INVALID_ARGUMENT
    assert missing.bad_fields == ("job.input.files[1]",)
    assert foreign.bad_fields == malformed.bad_fields == ("job.input.files[0]",)


async def test_a_request_id_reused_for_another_request_already_exists(
    stub: Stub, alice: Metadata
) -> None:
    await create(stub, alice, job_request(prompt="first", request_id="req-1"))

    error = await failure(
        stub.CreateJob(job_request(prompt="second", request_id="req-1"), metadata=alice)
    )

    assert error.code == Code.ALREADY_EXISTS and error.info.reason == "REQUEST_ID_REUSED"


async def test_an_oversized_request_is_refused(stub: Stub, alice: Metadata) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateJob(job_request(prompt="x" * 100_000), metadata=alice)

    assert caught.value.code() == Code.RESOURCE_EXHAUSTED


# --- names and ownership ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "job/1", "jobs/", "jobs/a/b", "jobs/" + "x" * 65])
async def test_a_malformed_name_is_an_invalid_name(stub: Stub, alice: Metadata, name: str) -> None:
    get = await failure(stub.GetJob(job_service_pb2.GetJobRequest(name=name), metadata=alice))
    cancel = await failure(
        stub.CancelJob(job_service_pb2.CancelJobRequest(name=name), metadata=alice)
    )
    watch = await stream_failure(
        stub.WatchJob(job_service_pb2.WatchJobRequest(name=name), metadata=alice)
    )

    for error in (get, cancel, watch):
        assert error.code == Code.INVALID_ARGUMENT and error.bad_fields == ("name",)


async def test_an_unknown_job_is_not_found(stub: Stub, alice: Metadata) -> None:
    error = await failure(
        stub.GetJob(job_service_pb2.GetJobRequest(name="jobs/0123abcd"), metadata=alice)
    )

    assert error.code == Code.NOT_FOUND and error.info.reason == "JOB_NOT_FOUND"
    assert "jobs/0123abcd" in error.message


async def test_another_callers_job_is_not_found_exactly_like_a_missing_one(
    stub: Stub, alice: Metadata, bob: Metadata
) -> None:
    name = await create(stub, alice)
    missing = "jobs/" + "0" * 32

    answers = []
    for job_name in (name, missing):
        answers.append(
            [
                await failure(
                    stub.GetJob(job_service_pb2.GetJobRequest(name=job_name), metadata=bob)
                ),
                await failure(
                    stub.CancelJob(job_service_pb2.CancelJobRequest(name=job_name), metadata=bob)
                ),
                await stream_failure(
                    stub.WatchJob(job_service_pb2.WatchJobRequest(name=job_name), metadata=bob)
                ),
            ]
        )

    for theirs, nobodys in zip(*answers, strict=True):
        assert theirs.code == nobodys.code == Code.NOT_FOUND
        assert theirs.info.reason == nobodys.info.reason == "JOB_NOT_FOUND"
        assert theirs.message.replace(name, missing) == nobodys.message
    still_there = await stub.GetJob(job_service_pb2.GetJobRequest(name=name), metadata=alice)
    assert still_there.job.state == job_pb2.Job.STATE_QUEUED


# --- listing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "color = red",
        "state = DONE",
        "state RUNNING",
        "state = RUNNING OR model = local/echo",
        "state = RUNNING AND state = QUEUED",
        'model = "local/echo',
    ],
)
async def test_a_filter_outside_the_supported_subset_is_explained(
    stub: Stub, alice: Metadata, text: str
) -> None:
    error = await failure(
        stub.ListJobs(job_service_pb2.ListJobsRequest(filter=text), metadata=alice)
    )

    assert error.code == Code.INVALID_ARGUMENT and error.bad_fields == ("filter",)
    assert "state" in error.message


@pytest.mark.parametrize("token", ["garbage!", "eyJ4IjoxfQ", "W10"])
async def test_a_malformed_page_token_is_invalid(stub: Stub, alice: Metadata, token: str) -> None:
    request = job_service_pb2.ListJobsRequest(page_token=token)
    error = await failure(stub.ListJobs(request, metadata=alice))

    assert error.code == Code.INVALID_ARGUMENT and error.info.reason == "INVALID_PAGE_TOKEN"
    assert error.bad_fields == ("page_token",)


async def test_a_page_token_cannot_be_used_with_another_filter(stub: Stub, alice: Metadata) -> None:
    for _ in range(2):
        await create(stub, alice)
    first = await stub.ListJobs(
        job_service_pb2.ListJobsRequest(page_size=1, filter="state = QUEUED"), metadata=alice
    )
    request = job_service_pb2.ListJobsRequest(
        page_size=1, page_token=first.next_page_token, filter="state = RUNNING"
    )

    error = await failure(stub.ListJobs(request, metadata=alice))

    assert error.info.reason == "INVALID_PAGE_TOKEN" and "filter" in error.message


async def test_a_negative_page_size_is_invalid(stub: Stub, alice: Metadata) -> None:
    jobs = await failure(
        stub.ListJobs(job_service_pb2.ListJobsRequest(page_size=-1), metadata=alice)
    )
    models = await failure(
        stub.ListModels(job_service_pb2.ListModelsRequest(page_size=-1), metadata=alice)
    )

    assert jobs.bad_fields == models.bad_fields == ("page_size",)


async def test_a_bad_models_page_token_is_invalid(stub: Stub, alice: Metadata) -> None:
    request = job_service_pb2.ListModelsRequest(page_token="eyJvIjo5OTl9")  # {"o":999}
    error = await failure(stub.ListModels(request, metadata=alice))

    assert error.info.reason == "INVALID_PAGE_TOKEN"


# --- watch arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize("after", [-1, 2])
async def test_after_sequence_must_name_a_recorded_event(
    stub: Stub, alice: Metadata, after: int
) -> None:
    name = await create(stub, alice)
    request = job_service_pb2.WatchJobRequest(name=name, after_sequence=after)

    error = await stream_failure(stub.WatchJob(request, metadata=alice))

    assert error.code == Code.INVALID_ARGUMENT and error.bad_fields == ("after_sequence",)
