"""Stability AI: Stable Image Core, Ultra and Stable Diffusion 3.5, answered at once.

`POST /v2beta/stable-image/generate/{core|ultra|sd3}` takes multipart form data (prompt,
negative_prompt, aspect_ratio, seed, output_format; for image to image an uploaded `image`
with `strength`) and, asked with `accept: image/*`, answers the image's bytes, its
`finish-reason` header (`SUCCESS`, or `CONTENT_FILTERED`) and its `seed`. Errors are JSON
`{"id", "name", "errors": [...]}`: `content_moderation` (403) is a content refusal, 402 a lack
of credits. Auth: `Authorization: Bearer $JOBGATE_STABILITY_API_KEY`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import httpx

from core.catalog import InputSpec, ModelSpec, OutputKind, Price, PriceUnit
from core.errors import Reason
from core.providers.base import JobFailed, RunContext
from core.providers.http import Clock, HttpPolicy, ProviderApi, Sleep
from core.settings import ProviderConfig

BASE_URL = "https://api.stability.ai"
POLICY = HttpPolicy(timeout_seconds=120.0)
ASPECT_RATIOS = ("1:1", "16:9", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_PROMPT_CHARS = 10_000
# Image to image: how far from the input image the result may go.
IMAGE_STRENGTH = "0.7"


def _model(model: str, name: str, endpoint: str, micros: int, *, image_to_image: bool) -> ModelSpec:
    inputs = [
        InputSpec("prompt", True, "What to draw.", max_length=MAX_PROMPT_CHARS),
        InputSpec("negative_prompt", description="What to keep out.", max_length=MAX_PROMPT_CHARS),
        InputSpec(
            "aspect_ratio",
            description="Default 1:1; ignored with an input image.",
            choices=ASPECT_RATIOS,
        ),
        InputSpec("seed", description="0 to 4294967294; the same seed, the same image."),
    ]
    if image_to_image:
        inputs.append(
            InputSpec(
                "files",
                description="One image to start from (uploaded).",
                max_items=1,
                content_types=IMAGE_TYPES,
            )
        )
    return ModelSpec(
        id=f"stability/{model}",
        display_name=name,
        description=f"Stability AI {name} (`{endpoint}`): one image from a prompt"
        + (" or from an input image and a prompt" if image_to_image else "")
        + ", stored as the blob output `image` (PNG).",
        inputs=tuple(inputs),
        outputs=(OutputKind.IMAGE,),
        price=Price(per_unit_micros=micros, unit=PriceUnit.IMAGE),
        max_units=1,
    )


CORE = _model("stable-image-core", "Stable Image Core", "core", 30_000, image_to_image=False)
ULTRA = _model("stable-image-ultra", "Stable Image Ultra", "ultra", 80_000, image_to_image=True)
SD35_LARGE = _model("sd3.5-large", "Stable Diffusion 3.5 Large", "sd3", 65_000, image_to_image=True)
SD35_MEDIUM = _model(
    "sd3.5-medium", "Stable Diffusion 3.5 Medium", "sd3", 35_000, image_to_image=True
)
MODELS = (CORE, ULTRA, SD35_LARGE, SD35_MEDIUM)
_ENDPOINTS = {CORE.id: "core", ULTRA.id: "ultra", SD35_LARGE.id: "sd3", SD35_MEDIUM.id: "sd3"}


def classify(response: httpx.Response, text: str) -> JobFailed | None:
    try:
        name = str(response.json().get("name") or "")
    except (ValueError, AttributeError):
        name = ""
    if name == "content_moderation":
        return JobFailed(f"stability refused the input: {text}", reason=Reason.CONTENT_POLICY)
    return None


class StabilityProvider:
    """Serves the `stability/*` models."""

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
            "stability",
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
        job_input, model = ctx.job.input, ctx.job.model
        form: dict[str, Any] = {"prompt": job_input.prompt, "output_format": "png"}
        if _ENDPOINTS[model] == "sd3":
            form["model"] = model.removeprefix("stability/")
        if job_input.negative_prompt:
            form["negative_prompt"] = job_input.negative_prompt
        if job_input.seed is not None:
            form["seed"] = str(job_input.seed)
        # Multipart even without a file: the API takes nothing else.
        files: dict[str, Any] = {"none": (None, "")}
        if job_input.files:
            ref = job_input.files[0]
            files = {"image": ("input", await ctx.read_file(ref), ref.content_type)}
            form["strength"] = IMAGE_STRENGTH
            if _ENDPOINTS[model] == "sd3":
                form["mode"] = "image-to-image"
        else:
            form["aspect_ratio"] = job_input.aspect_ratio or "1:1"
        await ctx.progress(0.1, f"asking {model}")
        async with self._api.session() as http:
            response = await http.request(
                "POST",
                f"/v2beta/stable-image/generate/{_ENDPOINTS[model]}",
                data=form,
                files=files,
                headers={"accept": "image/*"},
            )
        if response.headers.get("finish-reason", "SUCCESS") == "CONTENT_FILTERED":
            raise JobFailed("stability filtered the image", reason=Reason.CONTENT_POLICY)
        content_type = response.headers.get("content-type", "image/png").split(";")[0]
        await ctx.output_blob("image", response.content, content_type)
        ctx.report_usage(1)
        if seed := response.headers.get("seed"):
            await ctx.log(f"stability used seed {seed}")
