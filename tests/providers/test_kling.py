"""Kling against a fake: its JWT auth, text and image to video tasks through every status, its
error codes and rate limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any

import httpx
import pytest

from core.backends import Backends
from core.errors import Reason
from core.jobs import JobInput, ProviderTask
from core.providers.base import JobFailed
from core.providers.http import REDACTED, HttpPolicy
from core.providers.kling import DEADLINE_SECONDS, KlingProvider
from core.settings import ProviderConfig
from tests.providers.conftest import KLING_SECRET, SECRET, Sleeps, attempt, blob, input_file
from tests.providers.fake_http import FakeApi, Reply, Request

MP4 = b"kling-video-bytes"


def provider(config: ProviderConfig, sleeps: Sleeps) -> KlingProvider:
    return KlingProvider(
        config, policy=HttpPolicy(poll_interval_seconds=10), sleep=sleeps, clock=sleeps.clock
    )


def _unpad(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verified_claims(request: Request) -> dict[str, Any]:
    """What Kling checks: an HS256 JWT signed with the secret key, issued by the access key,
    valid now."""
    token = request.headers["authorization"].removeprefix("Bearer ")
    header, claims, signature = token.split(".")
    expected = hmac.new(KLING_SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256)
    assert hmac.compare_digest(_unpad(signature), expected.digest())
    assert json.loads(_unpad(header)) == {"alg": "HS256", "typ": "JWT"}
    payload: dict[str, Any] = json.loads(_unpad(claims))
    assert payload["iss"] == SECRET
    assert payload["nbf"] <= time.time() < payload["exp"]
    return payload


def envelope(data: dict[str, Any], code: int = 0, message: str = "SUCCEED") -> dict[str, Any]:
    return {"code": code, "message": message, "request_id": "req-1", "data": data}


def task(status: str, **extra: Any) -> Reply:
    return Reply(200, envelope({"task_id": "842", "task_status": status, **extra}))


def kling_api(
    fake: FakeApi, kind: str, statuses: list[Reply], refusals: tuple[Reply, ...] = ()
) -> None:
    """Kling's task endpoints: creates answer each of `refusals`, then a submitted task."""
    replies, refused = iter(statuses), iter(refusals)

    def create(request: Request, match: re.Match[str]) -> Reply:
        verified_claims(request)
        return next(refused, None) or task("submitted")

    def query(request: Request, match: re.Match[str]) -> Reply:
        verified_claims(request)
        return next(replies)

    fake.route("POST", f"/v1/videos/{kind}", create)
    fake.route("GET", f"/v1/videos/{kind}/842", query)
    fake.route("GET", "/cdn/video.mp4", lambda r, m: Reply(200, MP4, {"content-type": "video/mp4"}))


def succeeded(fake: FakeApi) -> Reply:
    videos = [{"id": "v1", "url": f"{fake.url}/cdn/video.mp4", "duration": "5.1"}]
    return task("succeed", task_status_msg="", task_result={"videos": videos})


async def test_a_text_to_video_task_is_created_polled_and_its_video_downloaded(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    kling_api(fake, "text2video", [task("submitted"), task("processing"), succeeded(fake)])
    job, ctx = await attempt(
        backends,
        "kling/kling-v2-master",
        JobInput(prompt="a fox", negative_prompt="blur", aspect_ratio="9:16", duration_seconds=5),
    )

    await provider(config, sleeps).run(ctx)

    assert fake.requests[0].json() == {
        "model_name": "kling-v2-master",
        "prompt": "a fox",
        "negative_prompt": "blur",
        "duration": "5",
        "mode": "std",
        "aspect_ratio": "9:16",
    }
    stored = await backends.jobs.get(job.id)
    assert stored is not None
    assert stored.provider_task == ProviderTask("kling/kling-v2-master", "text2video/842")
    assert await blob(backends, stored.outputs[0].blob) == MP4
    # The CDN URL is fetched as it is, without jobgate's token.
    assert "authorization" not in fake.requests[-1].headers
    assert ctx.usage_units == 5
    assert sleeps.waits == [10, 10]


async def test_an_image_to_video_task_gets_the_image_as_a_presigned_url(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    kling_api(fake, "image2video", [succeeded(fake)])
    image = await input_file(backends, b"still-image", "image/jpeg")
    _, ctx = await attempt(
        backends, "kling/kling-v1-6", JobInput(prompt="make it move", files=(image,))
    )

    await provider(config, sleeps).run(ctx)

    body = fake.requests[0].json()
    assert "aspect_ratio" not in body and body["model_name"] == "kling-v1-6"
    async with httpx.AsyncClient() as client:  # what Kling does with it
        assert (await client.get(body["image"])).content == b"still-image"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Failure to pass the risk control system", Reason.CONTENT_POLICY),
        ("generation failed", Reason.PROVIDER_ERROR),
    ],
)
async def test_a_failed_task_ends_the_job(
    backends: Backends,
    fake: FakeApi,
    config: ProviderConfig,
    sleeps: Sleeps,
    message: str,
    reason: Reason,
) -> None:
    kling_api(fake, "text2video", [task("failed", task_status_msg=message)])
    _, ctx = await attempt(backends, "kling/kling-v2-master", JobInput(prompt="x"))

    with pytest.raises(JobFailed) as raised:
        await provider(config, sleeps).run(ctx)

    assert raised.value.reason is reason and message in raised.value.message


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (429, 1102, Reason.QUOTA_EXCEEDED),  # resource pack depleted
        (400, 1301, Reason.CONTENT_POLICY),  # content security policy
        (400, 1201, Reason.INVALID_INPUT),  # invalid parameters
    ],
)
async def test_kling_error_codes_map_to_stable_reasons(
    backends: Backends,
    fake: FakeApi,
    config: ProviderConfig,
    sleeps: Sleeps,
    status: int,
    code: int,
    reason: Reason,
) -> None:
    body = {"code": code, "message": f"kling says no (token {SECRET})", "request_id": "r"}
    fake.route("POST", "/v1/videos/text2video", lambda r, m: Reply(status, body))
    _, ctx = await attempt(backends, "kling/kling-v2-master", JobInput(prompt="x"))

    with pytest.raises(JobFailed) as raised:
        await provider(config, sleeps).run(ctx)

    assert raised.value.reason is reason
    assert SECRET not in raised.value.message and REDACTED in raised.value.message
    assert len(fake.requests) == 1


async def test_a_rate_limited_create_is_retried_with_a_fresh_token(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    limited = Reply(429, {"code": 1302, "message": "rate limit", "request_id": "r"})
    kling_api(fake, "text2video", [succeeded(fake)], refusals=(limited,))
    _, ctx = await attempt(backends, "kling/kling-v2-master", JobInput(prompt="x"))

    await provider(config, sleeps).run(ctx)

    assert len(fake.requests_to("POST", "/v1/videos/text2video")) == 2
    for request in fake.requests_to("POST", "/v1/videos/text2video"):
        verified_claims(request)


async def test_a_task_still_running_past_its_deadline_ends_the_job_provider_timeout(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    kling_api(fake, "text2video", [task("processing")] * int(DEADLINE_SECONDS / 10 + 2))
    _, ctx = await attempt(backends, "kling/kling-v2-master", JobInput(prompt="x"))

    with pytest.raises(JobFailed) as raised:
        await provider(config, sleeps).run(ctx)

    assert raised.value.reason is Reason.PROVIDER_TIMEOUT
    assert sum(sleeps.waits) >= DEADLINE_SECONDS
