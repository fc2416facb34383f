"""OpenAI's video API (Sora) against a fake: create, every status, the content download, and the
task recorded on the job before it is polled."""

from __future__ import annotations

import re

import pytest

from core.backends import Backends
from core.errors import Reason
from core.jobs import JobInput, Progress, ProviderTask
from core.providers.base import JobFailed
from core.providers.http import HttpPolicy
from core.providers.openai_video import OpenAIVideoProvider
from core.settings import ProviderConfig
from tests.providers.conftest import SECRET, Sleeps, attempt, blob, input_file
from tests.providers.fake_http import FakeApi, FormFile, Reply, Request

MP4 = b"\x00\x00\x00\x18ftypmp42-a-sora-video"


def provider(config: ProviderConfig, sleeps: Sleeps) -> OpenAIVideoProvider:
    return OpenAIVideoProvider(
        config, policy=HttpPolicy(poll_interval_seconds=10), sleep=sleeps, clock=sleeps.clock
    )


def video(status: str, progress: int, **extra: object) -> Reply:
    body = {
        "id": "video_123",
        "object": "video",
        "model": "sora-2",
        "status": status,
        "progress": progress,
        "seconds": "8",
        "size": "1280x720",
        **extra,
    }
    return Reply(200, body)


async def test_a_video_is_created_polled_through_each_status_and_downloaded(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    job, ctx = await attempt(
        backends,
        "openai/sora-2",
        JobInput(
            prompt="a fox runs",
            duration_seconds=8,
            size="1280x720",
            files=(await input_file(backends, b"first-frame"),),
        ),
    )
    recorded_before_polling: list[ProviderTask | None] = []
    statuses = iter([video("queued", 0), video("in_progress", 40), video("completed", 100)])

    async def retrieve(request: Request, match: re.Match[str]) -> Reply:
        stored = await backends.jobs.get(job.id)
        assert stored is not None
        recorded_before_polling.append(stored.provider_task)
        return next(statuses)

    fake.route("POST", "/v1/videos", lambda r, m: video("queued", 0))
    fake.route("GET", "/v1/videos/video_123", retrieve)
    fake.route(
        "GET",
        "/v1/videos/video_123/content",
        lambda r, m: Reply(200, MP4, {"content-type": "video/mp4"}),
    )

    await provider(config, sleeps).run(ctx)

    create = fake.requests[0]
    assert create.headers["authorization"] == f"Bearer {SECRET}"
    assert create.field("model") == "sora-2" and create.field("prompt") == "a fox runs"
    assert (create.field("seconds"), create.field("size")) == ("8", "1280x720")
    [reference] = create.form()["input_reference"]
    assert isinstance(reference, FormFile) and reference.data == b"first-frame"
    assert recorded_before_polling == [ProviderTask("openai/sora-2", "video_123")] * 3
    assert fake.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
    assert sleeps.waits == [10, 10]
    stored = await backends.jobs.get(job.id)
    assert stored is not None
    [output] = stored.outputs
    assert output.label == "video" and await blob(backends, output.blob) == MP4
    assert ctx.usage_units == 8
    progress = [
        e.payload for e in await backends.jobs.events(job.id, 0) if isinstance(e.payload, Progress)
    ]
    assert [p.message for p in progress][:3] == [
        "sora: queued",
        "sora: in_progress",
        "sora: completed",
    ]


@pytest.mark.parametrize(
    ("code", "reason"),
    [("moderation_blocked", Reason.CONTENT_POLICY), ("internal_error", Reason.PROVIDER_ERROR)],
)
async def test_a_failed_video_ends_the_job_with_its_reason(
    backends: Backends,
    fake: FakeApi,
    config: ProviderConfig,
    sleeps: Sleeps,
    code: str,
    reason: Reason,
) -> None:
    fake.route("POST", "/v1/videos", lambda r, m: video("queued", 0))
    fake.route(
        "GET",
        "/v1/videos/video_123",
        lambda r, m: video("failed", 0, error={"code": code, "message": "it did not work"}),
    )
    _, ctx = await attempt(backends, "openai/sora-2", JobInput(prompt="x"))

    with pytest.raises(JobFailed) as raised:
        await provider(config, sleeps).run(ctx)

    assert raised.value.reason is reason and "it did not work" in raised.value.message
    assert not fake.requests_to("GET", ".*/content")


async def test_a_job_that_already_has_its_video_task_polls_it_instead_of_creating_another(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    fake.route("GET", "/v1/videos/video_123", lambda r, m: video("completed", 100))
    fake.route("GET", "/v1/videos/video_123/content", lambda r, m: Reply(200, MP4))
    _, ctx = await attempt(backends, "openai/sora-2", JobInput(prompt="x"))
    await ctx.record_provider_task("video_123")

    await provider(config, sleeps).run(ctx)

    assert not fake.requests_to("POST", "/v1/videos")
    assert ctx.usage_units == 8
