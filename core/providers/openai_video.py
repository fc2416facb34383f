"""OpenAI's video API (Sora): create a video task, poll it, download its content.

`POST /v1/videos` (multipart: model, prompt, seconds, size, optional `input_reference` image)
answers `{"id", "status": "queued"}`; `GET /v1/videos/{id}` moves through `queued`,
`in_progress` (with `progress` 0-100) to `completed` or `failed` (with `error`);
`GET /v1/videos/{id}/content` is the MP4. The task id is recorded before the first poll, so a
redelivered job polls the same video instead of paying for a second one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from core.catalog import InputSpec, ModelSpec, OutputKind, Price, PriceUnit, duration_choice
from core.errors import Reason
from core.providers.base import JobFailed, RunContext, resume_or_submit
from core.providers.http import (
    ApiSession,
    Clock,
    HttpPolicy,
    ProviderApi,
    Scrubber,
    Sleep,
    poll,
)
from core.providers.openai import BASE_URL, IMAGE_TYPES, MAX_PROMPT_CHARS, classify
from core.settings import ProviderConfig

POLICY = HttpPolicy(timeout_seconds=120.0, poll_interval_seconds=10.0)
# Sora takes minutes; a task running longer than this is not coming back.
DEADLINE_SECONDS = 45 * 60.0
SECONDS = (4, 8, 12)


def _model(model: str, name: str, sizes: tuple[str, ...], micros: int) -> ModelSpec:
    return ModelSpec(
        id=f"openai/{model}",
        display_name=name,
        description=f"OpenAI {name}: a video with sound from a prompt, optionally starting from "
        "an input image (its size must match `size`), stored as the blob output `video` (MP4). "
        "Runs for minutes.",
        inputs=(
            InputSpec("prompt", True, "What happens in the video.", max_length=MAX_PROMPT_CHARS),
            InputSpec(
                "duration",
                description="Default 4s.",
                choices=tuple(duration_choice(s) for s in SECONDS),
            ),
            InputSpec("size", description=f"Default {sizes[0]}.", choices=sizes),
            InputSpec(
                "files",
                description="One first-frame image.",
                max_items=1,
                content_types=IMAGE_TYPES,
            ),
        ),
        outputs=(OutputKind.VIDEO,),
        price=Price(per_unit_micros=micros, unit=PriceUnit.OUTPUT_SECOND),
        max_units=max(SECONDS),
    )


SORA_2 = _model("sora-2", "Sora 2", ("720x1280", "1280x720"), 100_000)
SORA_2_PRO = _model(
    "sora-2-pro", "Sora 2 Pro", ("720x1280", "1280x720", "1024x1792", "1792x1024"), 300_000
)
MODELS = (SORA_2, SORA_2_PRO)
_DONE = ("completed", "failed")


class OpenAIVideoProvider:
    """Serves `openai/sora-*`: submit, poll, download."""

    models = MODELS

    def __init__(
        self,
        config: ProviderConfig,
        *,
        policy: HttpPolicy = POLICY,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self._clock = clock
        self._api = ProviderApi(
            "openai",
            config.base_url or BASE_URL,
            auth=lambda: {"Authorization": f"Bearer {config.api_key}"},
            secrets=config.secrets,
            policy=replace(
                policy, timeout_seconds=config.timeout_seconds or policy.timeout_seconds
            ),
            classify=classify,
            sleep=sleep,
            clock=clock,
        )

    @property
    def api(self) -> ProviderApi:
        return self._api

    async def run(self, ctx: RunContext) -> None:
        async with self._api.session() as http:
            video_id = await resume_or_submit(ctx, lambda: self._submit(ctx, http))

            async def report(video: dict[str, Any]) -> None:
                status = video.get("status", "")
                fraction = min(0.9, max(0.0, float(video.get("progress") or 0) / 100 * 0.9))
                await ctx.progress(fraction, f"sora: {status}")

            video = await poll(
                self._api,
                lambda: http.json("GET", f"/v1/videos/{video_id}"),
                lambda v: v.get("status") in _DONE,
                deadline_seconds=DEADLINE_SECONDS,
                on_update=report,
                clock=self._clock,
            )
            if video["status"] == "failed":
                raise _failure(video, self._api.scrub)
            data, _ = await http.download(f"/v1/videos/{video_id}/content", authorized=True)
            await ctx.output_blob("video", data, "video/mp4")
            ctx.report_usage(int(video.get("seconds") or _seconds(ctx)))
            await ctx.progress(1.0, "stored the video")

    async def _submit(self, ctx: RunContext, http: ApiSession) -> str:
        job_input, spec = ctx.job.input, SORA_2_PRO if ctx.job.model == SORA_2_PRO.id else SORA_2
        form = {
            "model": ctx.job.model.removeprefix("openai/"),
            "prompt": job_input.prompt,
            "seconds": str(_seconds(ctx)),
            "size": job_input.size or (spec.input("size") or InputSpec("size")).choices[0],
        }
        files = None
        if job_input.files:
            ref = job_input.files[0]
            files = {"input_reference": ("input", await ctx.read_file(ref), ref.content_type)}
        body = await http.json("POST", "/v1/videos", data=form, files=files)
        if not body.get("id"):
            raise JobFailed("openai created a video without an id")
        return str(body["id"])


def _seconds(ctx: RunContext) -> int:
    duration = ctx.job.input.duration_seconds
    return int(duration) if duration else SECONDS[0]


def _failure(video: dict[str, Any], scrub: Scrubber) -> JobFailed:
    error = video.get("error") or {}
    message = scrub(str(error.get("message") or "the video failed"))
    code = str(error.get("code") or "")
    if "moderation" in code or "policy" in code:
        return JobFailed(f"openai refused the video: {message}", reason=Reason.CONTENT_POLICY)
    return JobFailed(f"openai: {message}")
