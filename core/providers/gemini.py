"""Google Gemini: text and images through `generateContent`, answered at once.

`POST /v1beta/models/{model}:generateContent` with `x-goog-api-key`; the request's `contents`
carry the prompt and input images inline (`inlineData`, base64: Gemini cannot fetch our URLs
for this API); image models are asked for `responseModalities: ["TEXT", "IMAGE"]` and answer
with `inlineData` parts. A blocked prompt (`promptFeedback.blockReason`) or answer
(`finishReason: SAFETY`) ends CONTENT_POLICY.
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
from core.providers.http import Clock, HttpPolicy, ProviderApi, Sleep, thousands
from core.settings import ProviderConfig

BASE_URL = "https://generativelanguage.googleapis.com"
POLICY = HttpPolicy(timeout_seconds=180.0)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_PROMPT_CHARS = 32_000
MAX_OUTPUT_TOKENS = 8192
TEXT_MAX_UNITS = thousands(MAX_PROMPT_CHARS // 4 + MAX_OUTPUT_TOKENS + 2000)
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
_BLOCKED = ("SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY")


def _text_model(model: str, name: str, micros: int, fallback: str = "") -> ModelSpec:
    return ModelSpec(
        id=f"gemini/{model}",
        display_name=name,
        description=f"Google {name}: answers the prompt as the text output `text`, at most "
        f"{MAX_OUTPUT_TOKENS} tokens; input images are shown to the model.",
        inputs=(
            InputSpec("prompt", True, "The question or instruction.", max_length=MAX_PROMPT_CHARS),
            InputSpec(
                "files",
                description="Images to look at, sent inline.",
                max_items=8,
                content_types=IMAGE_TYPES,
            ),
            InputSpec("seed", description="Best-effort reproducible sampling."),
        ),
        outputs=(OutputKind.TEXT,),
        price=Price(per_unit_micros=micros, unit=PriceUnit.THOUSAND_TOKENS),
        max_units=TEXT_MAX_UNITS,
        fallback=fallback,
    )


GEMINI_FLASH = _text_model(
    "gemini-2.5-flash", "Gemini 2.5 Flash", 2_500, fallback="openai/gpt-4o-mini"
)
GEMINI_PRO = _text_model("gemini-2.5-pro", "Gemini 2.5 Pro", 10_000)
GEMINI_FLASH_LITE = _text_model("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", 400)
GEMINI_IMAGE = ModelSpec(
    id="gemini/gemini-2.5-flash-image",
    display_name="Gemini 2.5 Flash Image",
    description="Google Gemini 2.5 Flash Image: one image from a prompt and optional input "
    "images (edits, combinations), stored as the blob output `image`; any text it adds is the "
    "text output `text`.",
    inputs=(
        InputSpec("prompt", True, "What to draw or change.", max_length=MAX_PROMPT_CHARS),
        InputSpec(
            "files",
            description="Images to edit or combine, sent inline.",
            max_items=3,
            content_types=IMAGE_TYPES,
        ),
        InputSpec("aspect_ratio", description="Default 1:1.", choices=ASPECT_RATIOS),
        InputSpec("seed", description="Best-effort reproducible sampling."),
    ),
    outputs=(OutputKind.IMAGE, OutputKind.TEXT),
    price=Price(per_unit_micros=39_000, unit=PriceUnit.IMAGE),
    max_units=1,
)
MODELS = (GEMINI_FLASH, GEMINI_PRO, GEMINI_FLASH_LITE, GEMINI_IMAGE)


def classify(response: httpx.Response, text: str) -> JobFailed | None:
    """Gemini's error body: `{"error": {"code", "message", "status"}}`."""
    try:
        status = str((response.json().get("error") or {}).get("status") or "")
    except (ValueError, AttributeError):
        status = ""
    if status == "RESOURCE_EXHAUSTED" and "quota" in text.lower() and "per day" in text.lower():
        return JobFailed(f"gemini: {text}", reason=Reason.QUOTA_EXCEEDED)
    if response.status_code == 400 and status == "FAILED_PRECONDITION":
        return JobFailed(f"gemini: {text}")
    return None


class GeminiProvider:
    """Serves the `gemini/*` models."""

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
            "gemini",
            config.base_url or BASE_URL,
            auth=lambda: {"x-goog-api-key": config.api_key},
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
        job_input = ctx.job.input
        image_model = ctx.job.model == GEMINI_IMAGE.id
        parts: list[dict[str, Any]] = [{"text": job_input.prompt}]
        for ref in job_input.files:
            data = base64.b64encode(await ctx.read_file(ref)).decode()
            parts.append({"inlineData": {"mimeType": ref.content_type, "data": data}})
        config: dict[str, Any] = {}
        if job_input.seed is not None:
            config["seed"] = job_input.seed
        if image_model:
            config["responseModalities"] = ["TEXT", "IMAGE"]
            config["imageConfig"] = {"aspectRatio": job_input.aspect_ratio or "1:1"}
        else:
            config["maxOutputTokens"] = MAX_OUTPUT_TOKENS
        request = {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}
        model = ctx.job.model.removeprefix("gemini/")
        await ctx.progress(0.1, f"asking {ctx.job.model}")
        async with self._api.session() as http:
            body = await http.json("POST", f"/v1beta/models/{model}:generateContent", json=request)
        usage = body.get("usageMetadata") or {}
        if blocked := (body.get("promptFeedback") or {}).get("blockReason"):
            raise JobFailed(f"gemini blocked the prompt: {blocked}", reason=Reason.CONTENT_POLICY)
        candidate = (body.get("candidates") or [{}])[0]
        if candidate.get("finishReason") in _BLOCKED:
            raise JobFailed(
                f"gemini stopped the answer: {candidate['finishReason']}",
                reason=Reason.CONTENT_POLICY,
            )
        texts, images = [], 0
        for part in (candidate.get("content") or {}).get("parts") or []:
            if part.get("text") and not part.get("thought"):
                texts.append(part["text"])
            elif inline := part.get("inlineData"):
                try:
                    data = base64.b64decode(inline.get("data", ""), validate=True)
                except binascii.Error:
                    raise JobFailed("gemini returned an image that is not base64") from None
                await ctx.output_blob("image", data, inline.get("mimeType") or "image/png")
                images += 1
        if image_model:
            if not images:
                raise JobFailed("gemini returned no image" + (f": {texts[0]}" if texts else ""))
            ctx.report_usage(images)
        else:
            ctx.report_usage(thousands(int(usage.get("totalTokenCount") or 0)))
        if texts or not image_model:
            await ctx.output_text("text", "".join(texts))
