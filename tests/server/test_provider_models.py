"""The provider models through the API: ListModels shows what each takes, its limits and price;
CreateJob holds the input to the model's limits (naming the field) and refuses models whose
provider this deployment has no key for, saying what to set."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf import duration_pb2, json_format
from grpc import StatusCode as Code
from jobgate.v1 import job_pb2, job_service_pb2

from core.backends import Backends, open_backends
from core.providers.registry import builtin_registry
from core.settings import ProviderConfig, Settings
from tests.server.support import Metadata, Stub, job_request
from tests.server.test_errors import failure


@pytest.fixture
async def backends(settings: Settings) -> AsyncIterator[Backends]:
    """Kling and OpenAI configured; the other providers not."""
    settings.data_dir.mkdir(parents=True)
    configured = Settings(
        data_dir=settings.data_dir,
        providers={
            "kling": ProviderConfig(api_key="ak", secret_key="sk"),
            "openai": ProviderConfig(api_key="sk-openai"),
        },
    )
    opened = await open_backends(settings, builtin_registry(configured).catalog, serves_api=True)
    yield opened
    await opened.close()


def video_request(
    model: str = "kling/kling-v2-master", **fields: object
) -> job_service_pb2.CreateJobRequest:
    job_input = job_pb2.JobInput(prompt="a fox")
    for name, value in fields.items():
        if name == "duration":
            job_input.duration.CopyFrom(duration_pb2.Duration(seconds=int(value)))  # type: ignore[call-overload]
        else:
            setattr(job_input, name, value)
    return job_service_pb2.CreateJobRequest(job=job_pb2.Job(model=model, input=job_input))


async def test_list_models_shows_configured_providers_with_their_limits_and_price(
    stub: Stub, alice: Metadata
) -> None:
    response = await stub.ListModels(job_service_pb2.ListModelsRequest(), metadata=alice)

    models = {m.id: m for m in response.models}
    assert {m.split("/")[0] for m in models} == {"local", "kling", "openai"}
    kling = json_format.MessageToDict(models["kling/kling-v2-master"])
    assert kling["maxUnits"] == "10" and kling["price"]["unit"] == "UNIT_OUTPUT_SECOND"
    inputs = {i["field"]: i for i in kling["inputs"]}
    assert inputs["duration"]["choices"] == ["5s", "10s"]
    assert inputs["aspect_ratio"]["choices"] == ["16:9", "9:16", "1:1"]
    assert inputs["files"]["maxItems"] == 1 and "image/png" in inputs["files"]["contentTypes"]
    assert models["openai/gpt-4o-mini"].fallback_model == "gemini/gemini-2.5-flash"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (video_request(duration=7), "job.input.duration"),
        (video_request(aspect_ratio="4:3"), "job.input.aspect_ratio"),
        (video_request(size="1024x1024"), "job.input.size"),
        (video_request(prompt="x" * 2501), "job.input.prompt"),
        (video_request("openai/gpt-image-1", size="640x480"), "job.input.size"),
        (video_request("openai/sora-2", duration=5), "job.input.duration"),
    ],
    ids=["duration", "aspect", "size-not-taken", "long-prompt", "image-size", "sora-seconds"],
)
async def test_input_beyond_a_models_limits_is_refused_naming_the_field(
    stub: Stub, alice: Metadata, request_: job_service_pb2.CreateJobRequest, field: str
) -> None:
    error = await failure(stub.CreateJob(request_, metadata=alice))

    assert error.code == Code.INVALID_ARGUMENT and error.bad_fields == (field,)


async def test_input_files_of_a_type_the_model_does_not_take_are_refused(
    stub: Stub, alice: Metadata, backends: Backends
) -> None:
    await backends.blobs.put("tenants/alice/clip.gif", b"gif", "image/gif")
    request = job_request("kling/kling-v1-6", prompt="move", files=["tenants/alice/clip.gif"])

    error = await failure(stub.CreateJob(request, metadata=alice))

    assert error.code == Code.INVALID_ARGUMENT and error.bad_fields == ("job.input.files[0]",)
    assert "image/gif" in error.message


async def test_input_within_the_limits_is_queued(stub: Stub, alice: Metadata) -> None:
    response = await stub.CreateJob(video_request(duration=10, aspect_ratio="9:16"), metadata=alice)

    assert response.job.state == job_pb2.Job.STATE_QUEUED


async def test_a_model_whose_provider_has_no_key_is_refused_with_what_to_set(
    stub: Stub, alice: Metadata
) -> None:
    error = await failure(stub.CreateJob(video_request("replicate/flux-schnell"), metadata=alice))

    assert error.code == Code.FAILED_PRECONDITION
    assert error.info.reason == "MODEL_NOT_CONFIGURED"
    assert "JOBGATE_REPLICATE_API_KEY" in error.message
