"""Stability AI's stable-image API against a fake: multipart requests, image bytes answered
under `accept: image/*`, its filter header and error shapes."""

from __future__ import annotations

import pytest

from core.backends import Backends
from core.errors import Reason
from core.jobs import JobInput
from core.providers.base import JobFailed
from core.providers.http import HttpPolicy
from core.providers.stability import StabilityProvider
from core.settings import ProviderConfig
from tests.providers.conftest import SECRET, Sleeps, blob, input_file, run
from tests.providers.fake_http import FakeApi, FormFile, Reply

PNG = b"stability-png"


def provider(config: ProviderConfig, sleeps: Sleeps) -> StabilityProvider:
    return StabilityProvider(config, policy=HttpPolicy(), sleep=sleeps, clock=sleeps.clock)


def image(finish: str = "SUCCESS") -> Reply:
    return Reply(200, PNG, {"content-type": "image/png", "finish-reason": finish, "seed": "42"})


async def test_a_core_image_from_a_multipart_request(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    fake.route("POST", "/v2beta/stable-image/generate/core", lambda r, m: image())

    job, ctx = await run(
        backends,
        provider(config, sleeps),
        "stability/stable-image-core",
        JobInput(prompt="a fox", negative_prompt="dogs", aspect_ratio="16:9", seed=42),
    )

    [request] = fake.requests
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["accept"] == "image/*"
    assert request.headers["content-type"].startswith("multipart/form-data")
    form = {name: values for name, values in request.form().items() if name != "none"}
    assert form == {
        "prompt": ["a fox"],
        "output_format": ["png"],
        "negative_prompt": ["dogs"],
        "seed": ["42"],
        "aspect_ratio": ["16:9"],
    }
    assert await blob(backends, job.outputs[0].blob) == PNG
    assert ctx.usage_units == 1


async def test_image_to_image_on_sd3_uploads_the_image(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    fake.route("POST", "/v2beta/stable-image/generate/sd3", lambda r, m: image())
    start = await input_file(backends, b"start-image")

    await run(
        backends,
        provider(config, sleeps),
        "stability/sd3.5-large",
        JobInput(prompt="as a painting", files=(start,)),
    )

    form = fake.requests[0].form()
    assert form["model"] == ["sd3.5-large"] and form["mode"] == ["image-to-image"]
    assert "aspect_ratio" not in form and form["strength"] == ["0.7"]
    [upload] = form["image"]
    assert isinstance(upload, FormFile) and upload.data == b"start-image"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (image("CONTENT_FILTERED"), Reason.CONTENT_POLICY),
        (
            Reply(
                403,
                {
                    "id": "e1",
                    "name": "content_moderation",
                    "errors": ["Your request was flagged by our content moderation system"],
                },
            ),
            Reason.CONTENT_POLICY,
        ),
        (
            Reply(
                402,
                {"id": "e2", "name": "payment_required", "errors": ["You lack sufficient credits"]},
            ),
            Reason.QUOTA_EXCEEDED,
        ),
        (
            Reply(
                400,
                {"id": "e3", "name": "bad_request", "errors": ["aspect_ratio: must be one of ..."]},
            ),
            Reason.INVALID_INPUT,
        ),
    ],
    ids=["filtered", "moderation", "credits", "bad-request"],
)
async def test_refusals_and_errors_map_to_stable_reasons(
    backends: Backends,
    fake: FakeApi,
    config: ProviderConfig,
    sleeps: Sleeps,
    reply: Reply,
    reason: Reason,
) -> None:
    fake.route("POST", "/v2beta/stable-image/generate/ultra", lambda r, m: reply)

    with pytest.raises(JobFailed) as raised:
        await run(
            backends, provider(config, sleeps), "stability/stable-image-ultra", JobInput(prompt="x")
        )

    assert raised.value.reason is reason
    assert len(fake.requests) == 1
