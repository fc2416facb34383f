"""OpenAI: images (`/v1/images/generations`, `/v1/images/edits`) and text (Chat Completions).

Both answer at once. Images come back as `b64_json` (or a `url`, downloaded); input images go
up as multipart uploads to the edits endpoint. Text models get input images as presigned URLs
(`image_url` content parts). Auth: `Authorization: Bearer $JOBGATE_OPENAI_API_KEY`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from dataclasses import replace
from typing import Any

import httpx

from core.catalog import InputSpec, ModelSpec, OutputKind, Price, PriceUnit
from core.errors import Reason
from core.providers.base import JobFailed, RunContext
from core.providers.http import ApiSession, Clock, HttpPolicy, ProviderApi, Sleep, thousands
from core.settings import ProviderConfig

BASE_URL = "https://api.openai.com"
POLICY = HttpPolicy(timeout_seconds=180.0)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_PROMPT_CHARS = 32_000
# Text jobs: a prompt of at most MAX_PROMPT_CHARS (about a quarter as many tokens) and at most
# MAX_OUTPUT_TOKENS of answer bound a job's tokens, and so its price.
MAX_OUTPUT_TOKENS = 4096
TEXT_MAX_UNITS = thousands(MAX_PROMPT_CHARS // 4 + MAX_OUTPUT_TOKENS + 1000)


def _image_model(
    model: str, name: str, sizes: tuple[str, ...], micros: int, *, edits: bool
) -> ModelSpec:
    inputs = [
        InputSpec("prompt", True, "What to draw.", max_length=MAX_PROMPT_CHARS),
        InputSpec("size", description=f"Default {sizes[0]}.", choices=sizes),
    ]
    if edits:
        inputs.append(
            InputSpec(
                "files",
                description="Images to edit or combine, uploaded to OpenAI.",
                max_items=4,
                content_types=IMAGE_TYPES,
            )
        )
    return ModelSpec(
        id=f"openai/{model}",
        display_name=name,
        description=f"OpenAI {name}: one image from a prompt"
        + (", or edited from input images" if edits else "")
        + ", stored as the blob output `image`.",
        inputs=tuple(inputs),
        outputs=(OutputKind.IMAGE,),
        price=Price(per_unit_micros=micros, unit=PriceUnit.IMAGE),
        max_units=1,
    )


def _text_model(model: str, name: str, micros: int, fallback: str = "") -> ModelSpec:
    return ModelSpec(
        id=f"openai/{model}",
        display_name=name,
        description=f"OpenAI {name} (Chat Completions): answers the prompt as the text output "
        f"`text`, at most {MAX_OUTPUT_TOKENS} tokens; input images are shown to the model.",
        inputs=(
            InputSpec("prompt", True, "The question or instruction.", max_length=MAX_PROMPT_CHARS),
            InputSpec(
                "files", description="Images to look at.", max_items=8, content_types=IMAGE_TYPES
            ),
            InputSpec("seed", description="Best-effort reproducible sampling."),
        ),
        outputs=(OutputKind.TEXT,),
        price=Price(per_unit_micros=micros, unit=PriceUnit.THOUSAND_TOKENS),
        max_units=TEXT_MAX_UNITS,
        fallback=fallback,
    )


GPT_IMAGE_1 = _image_model(
    "gpt-image-1", "GPT Image 1", ("1024x1024", "1536x1024", "1024x1536"), 42_000, edits=True
)
DALL_E_3 = _image_model(
    "dall-e-3", "DALL·E 3", ("1024x1024", "1792x1024", "1024x1792"), 40_000, edits=False
)
# Priced per thousand tokens at the output rate, the dearer of the two.
GPT_4O = _text_model("gpt-4o", "GPT-4o", 10_000)
GPT_4O_MINI = _text_model("gpt-4o-mini", "GPT-4o mini", 600, fallback="gemini/gemini-2.5-flash")
GPT_4_1_MINI = _text_model("gpt-4.1-mini", "GPT-4.1 mini", 1_600)
MODELS = (GPT_IMAGE_1, DALL_E_3, GPT_4O, GPT_4O_MINI, GPT_4_1_MINI)
_IMAGE_MODELS = {GPT_IMAGE_1.id, DALL_E_3.id}


def classify(response: httpx.Response, text: str) -> JobFailed | None:
    """OpenAI's error body: `{"error": {"message", "type", "code"}}`."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    code = str(error.get("code") or "")
    kind = str(error.get("type") or "")
    if code == "insufficient_quota" or kind == "insufficient_quota":
        return JobFailed(f"openai: {text}", reason=Reason.QUOTA_EXCEEDED)
    if code in ("content_policy_violation", "moderation_blocked") or "safety" in code:
        return JobFailed(f"openai refused the prompt: {text}", reason=Reason.CONTENT_POLICY)
    return None


class OpenAIProvider:
    """Serves the `openai/*` image and text models."""

    models = MODELS

    def __init__(
        self,
        config: ProviderConfig,
        *,
        policy: HttpPolicy = POLICY,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
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
            if ctx.job.model in _IMAGE_MODELS:
                await self._image(ctx, http)
            else:
                await self._text(ctx, http)

    async def _image(self, ctx: RunContext, http: ApiSession) -> None:
        job_input, model = ctx.job.input, ctx.job.model.removeprefix("openai/")
        spec = GPT_IMAGE_1 if ctx.job.model == GPT_IMAGE_1.id else DALL_E_3
        size = job_input.size or (spec.input("size") or InputSpec("size")).choices[0]
        await ctx.progress(0.1, f"asking {ctx.job.model} for a {size} image")
        if job_input.files:
            uploads = [
                ("image[]", (f"input-{i}", await ctx.read_file(ref), ref.content_type))
                for i, ref in enumerate(job_input.files)
            ]
            form = {"model": model, "prompt": job_input.prompt, "size": size, "n": "1"}
            body = await http.json("POST", "/v1/images/edits", data=form, files=uploads)
        else:
            request: dict[str, Any] = {
                "model": model,
                "prompt": job_input.prompt,
                "size": size,
                "n": 1,
            }
            if model == "dall-e-3":
                request["response_format"] = "b64_json"
            body = await http.json("POST", "/v1/images/generations", json=request)
        images = body.get("data") or []
        if not images:
            raise JobFailed("openai returned no image")
        await ctx.progress(0.8, "storing the image")
        for image in images:
            data, content_type = await _image_bytes(http, image)
            await ctx.output_blob("image", data, content_type)
        ctx.report_usage(len(images))
        if revised := images[0].get("revised_prompt"):
            await ctx.log(f"openai revised the prompt to: {revised}")

    async def _text(self, ctx: RunContext, http: ApiSession) -> None:
        job_input = ctx.job.input
        content: list[dict[str, Any]] = [{"type": "text", "text": job_input.prompt}]
        for ref in job_input.files:
            content.append({"type": "image_url", "image_url": {"url": await ctx.file_url(ref)}})
        request: dict[str, Any] = {
            "model": ctx.job.model.removeprefix("openai/"),
            "messages": [{"role": "user", "content": content}],
            "max_completion_tokens": MAX_OUTPUT_TOKENS,
        }
        if job_input.seed is not None:
            request["seed"] = job_input.seed
        await ctx.progress(0.1, f"asking {ctx.job.model}")
        body = await http.json("POST", "/v1/chat/completions", json=request)
        usage = body.get("usage") or {}
        ctx.report_usage(thousands(int(usage.get("total_tokens") or 0)))
        choice = (body.get("choices") or [{}])[0]
        if choice.get("finish_reason") == "content_filter":
            raise JobFailed(
                "openai's content filter stopped the answer", reason=Reason.CONTENT_POLICY
            )
        message = choice.get("message") or {}
        if message.get("refusal"):
            raise JobFailed(f"openai refused: {message['refusal']}", reason=Reason.CONTENT_POLICY)
        await ctx.output_text("text", message.get("content") or "")


async def _image_bytes(http: ApiSession, image: dict[str, Any]) -> tuple[bytes, str]:
    if image.get("b64_json"):
        try:
            return base64.b64decode(image["b64_json"], validate=True), "image/png"
        except binascii.Error:
            raise JobFailed("openai returned an image that is not base64") from None
    if image.get("url"):
        return await http.download(image["url"])
    raise JobFailed("openai returned an image with neither b64_json nor url")
