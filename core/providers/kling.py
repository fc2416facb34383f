"""Kling: video from text or from an image, as a task to create and poll.

Auth is a JWT (HS256) signed with the secret key, its `iss` the access key, valid 30 minutes:
`Authorization: Bearer <jwt>`. `POST /v1/videos/text2video` (or `image2video`, the image as a
presigned URL) answers `{"code": 0, "data": {"task_id", "task_status": "submitted"}}`;
`GET /v1/videos/{text2video|image2video}/{task_id}` moves through `submitted`, `processing` to
`succeed` (`task_result.videos[].url`, downloaded) or `failed` (`task_status_msg`). Errors carry
Kling's own `code`: 1102 and friends mean the account is out of credit, 1301 a content refusal,
1302-1304 rate limits. The task id (with its endpoint) is recorded before the first poll.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from dataclasses import replace
from typing import Any

import httpx

from core.catalog import InputSpec, ModelSpec, OutputKind, Price, PriceUnit, duration_choice
from core.errors import Reason
from core.providers.base import JobFailed, RunContext, resume_or_submit
from core.providers.http import ApiSession, Clock, HttpPolicy, ProviderApi, Sleep, poll
from core.settings import ProviderConfig

BASE_URL = "https://api-singapore.klingai.com"
POLICY = HttpPolicy(timeout_seconds=60.0, poll_interval_seconds=10.0)
DEADLINE_SECONDS = 30 * 60.0
TOKEN_SECONDS = 1800
IMAGE_TYPES = ("image/png", "image/jpeg")
SECONDS = (5, 10)
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
MAX_PROMPT_CHARS = 2500
QUOTA_CODES = frozenset({1100, 1101, 1102, 1103})
CONTENT_CODES = frozenset({1301})
_DONE = ("succeed", "failed")


def _model(model: str, name: str, micros: int) -> ModelSpec:
    return ModelSpec(
        id=f"kling/{model}",
        display_name=name,
        description=f"Kling {name}: a video from a prompt, or from an input image and a prompt, "
        "stored as the blob output `video` (MP4). Runs for minutes.",
        inputs=(
            InputSpec("prompt", True, "What happens in the video.", max_length=MAX_PROMPT_CHARS),
            InputSpec(
                "negative_prompt", description="What to keep out.", max_length=MAX_PROMPT_CHARS
            ),
            InputSpec(
                "duration",
                description="Default 5s.",
                choices=tuple(duration_choice(s) for s in SECONDS),
            ),
            InputSpec(
                "aspect_ratio",
                description="Text to video only; default 16:9.",
                choices=ASPECT_RATIOS,
            ),
            InputSpec(
                "files",
                description="One image to animate (image to video).",
                max_items=1,
                content_types=IMAGE_TYPES,
            ),
        ),
        outputs=(OutputKind.VIDEO,),
        price=Price(per_unit_micros=micros, unit=PriceUnit.OUTPUT_SECOND),
        max_units=max(SECONDS),
    )


KLING_V2_MASTER = _model("kling-v2-master", "Kling 2.0 Master", 280_000)
KLING_V2_1_MASTER = _model("kling-v2-1-master", "Kling 2.1 Master", 280_000)
KLING_V1_6 = _model("kling-v1-6", "Kling 1.6", 56_000)
MODELS = (KLING_V2_MASTER, KLING_V2_1_MASTER, KLING_V1_6)


def jwt_token(access_key: str, secret_key: str, now: float) -> str:
    """Kling's bearer token: HS256 over `{"iss", "exp", "nbf"}`, a little before now so a clock
    a few seconds apart does not refuse it."""

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = part({"alg": "HS256", "typ": "JWT"})
    claims = part({"iss": access_key, "exp": int(now) + TOKEN_SECONDS, "nbf": int(now) - 5})
    signed = f"{header}.{claims}".encode()
    signature = hmac.new(secret_key.encode(), signed, hashlib.sha256).digest()
    return f"{header}.{claims}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def classify(response: httpx.Response, text: str) -> JobFailed | None:
    """Kling's error body: `{"code", "message", "request_id"}`."""
    try:
        code = int(response.json().get("code"))
    except (ValueError, TypeError, AttributeError):
        return None
    if code in QUOTA_CODES:
        return JobFailed(f"kling: {text} (code {code})", reason=Reason.QUOTA_EXCEEDED)
    if code in CONTENT_CODES:
        return JobFailed(f"kling refused the input: {text}", reason=Reason.CONTENT_POLICY)
    return None


class KlingProvider:
    """Serves the `kling/*` models: submit, poll, download."""

    models = MODELS

    def __init__(
        self,
        config: ProviderConfig,
        *,
        policy: HttpPolicy = POLICY,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._clock = clock
        self._api = ProviderApi(
            "kling",
            config.base_url or BASE_URL,
            auth=lambda: {
                "Authorization": "Bearer "
                + jwt_token(config.api_key, config.secret_key, wall_clock())
            },
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
            # The id says which endpoint polls it: `image2video/123`.
            task = await resume_or_submit(ctx, lambda: self._submit(ctx, http))

            async def report(data: dict[str, Any]) -> None:
                status = data.get("task_status", "")
                await ctx.progress(0.5 if status == "processing" else 0.1, f"kling: {status}")

            data = await poll(
                self._api,
                lambda: self._task(http, task),
                lambda d: d.get("task_status") in _DONE,
                deadline_seconds=DEADLINE_SECONDS,
                on_update=report,
                clock=self._clock,
            )
            if data["task_status"] == "failed":
                message = self._api.scrub(str(data.get("task_status_msg") or "the task failed"))
                reason = Reason.CONTENT_POLICY if "risk" in message.lower() else None
                raise JobFailed(f"kling: {message}", reason=reason)
            videos = (data.get("task_result") or {}).get("videos") or []
            if not videos:
                raise JobFailed("kling's task succeeded without a video")
            seconds = 0
            for video in videos:
                content, _ = await http.download(video["url"])
                await ctx.output_blob("video", content, "video/mp4")
                seconds += round(float(video.get("duration") or 0))
            ctx.report_usage(seconds or _seconds(ctx))
            await ctx.progress(1.0, "stored the video")

    async def _submit(self, ctx: RunContext, http: ApiSession) -> str:
        job_input = ctx.job.input
        request: dict[str, Any] = {
            "model_name": ctx.job.model.removeprefix("kling/"),
            "prompt": job_input.prompt,
            "duration": str(_seconds(ctx)),
            "mode": "std",
        }
        if job_input.negative_prompt:
            request["negative_prompt"] = job_input.negative_prompt
        if job_input.files:
            kind = "image2video"
            request["image"] = await ctx.file_url(job_input.files[0])
        else:
            kind = "text2video"
            request["aspect_ratio"] = job_input.aspect_ratio or ASPECT_RATIOS[0]
        body = await http.json("POST", f"/v1/videos/{kind}", json=request)
        task_id = (body.get("data") or {}).get("task_id")
        if body.get("code") != 0 or not task_id:
            raise JobFailed(f"kling did not create a task: {self._api.scrub(str(body))[:300]}")
        return f"{kind}/{task_id}"

    async def _task(self, http: ApiSession, task: str) -> dict[str, Any]:
        body = await http.json("GET", f"/v1/videos/{task}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise JobFailed(f"kling answered without task data: {self._api.scrub(str(body))[:300]}")
        return data


def _seconds(ctx: RunContext) -> int:
    duration = ctx.job.input.duration_seconds
    return int(duration) if duration else SECONDS[0]
