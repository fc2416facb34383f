"""Replicate: predictions on public models, created, polled and cancelled.

`POST /v1/models/{owner}/{name}/predictions` with `{"input": {...}}` and `Prefer: wait=N`
(answers when done or after N seconds, whichever is first) returns a prediction
`{"id", "status", "output", "error", "logs"}`; `GET /v1/predictions/{id}` moves it through
`starting`, `processing` to `succeeded`, `failed` or `canceled`; `POST
/v1/predictions/{id}/cancel` stops it when the job's owner cancels the job. Outputs are file
URLs, downloaded into the blob store. Auth: `Authorization: Bearer $JOBGATE_REPLICATE_API_KEY`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from core.catalog import InputSpec, ModelSpec, OutputKind, Price, PriceUnit
from core.errors import Reason
from core.providers.base import JobFailed, RunContext, resume_or_submit
from core.providers.http import ApiSession, Clock, HttpPolicy, ProviderApi, Sleep, poll
from core.settings import ProviderConfig

log = logging.getLogger(__name__)

BASE_URL = "https://api.replicate.com"
POLICY = HttpPolicy(timeout_seconds=90.0, poll_interval_seconds=2.0)
DEADLINE_SECONDS = 15 * 60.0
# How long the create call may wait for the prediction to finish (`Prefer: wait`).
CREATE_WAIT_SECONDS = 5
CANCEL_TIMEOUT_SECONDS = 10.0
ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
_DONE = ("succeeded", "failed", "canceled")


def _model(path: str, name: str, micros: int, fallback: str = "") -> ModelSpec:
    return ModelSpec(
        id=f"replicate/{path.split('/', 1)[1]}",
        display_name=name,
        description=f"{name} on Replicate ({path}): one image from a prompt, stored as the blob "
        "output `image` (PNG).",
        inputs=(
            InputSpec("prompt", True, "What to draw.", max_length=10_000),
            InputSpec("aspect_ratio", description="Default 1:1.", choices=ASPECT_RATIOS),
            InputSpec("seed", description="The same seed and prompt give the same image."),
        ),
        outputs=(OutputKind.IMAGE,),
        price=Price(per_unit_micros=micros, unit=PriceUnit.IMAGE),
        max_units=1,
        fallback=fallback,
    )


FLUX_SCHNELL = _model("black-forest-labs/flux-schnell", "FLUX.1 [schnell]", 3_000)
FLUX_DEV = _model("black-forest-labs/flux-dev", "FLUX.1 [dev]", 25_000)
FLUX_1_1_PRO = _model("black-forest-labs/flux-1.1-pro", "FLUX1.1 [pro]", 40_000)
MODELS = (FLUX_SCHNELL, FLUX_DEV, FLUX_1_1_PRO)
_PATHS = {
    FLUX_SCHNELL.id: "black-forest-labs/flux-schnell",
    FLUX_DEV.id: "black-forest-labs/flux-dev",
    FLUX_1_1_PRO.id: "black-forest-labs/flux-1.1-pro",
}


class ReplicateProvider:
    """Serves the `replicate/*` models: create, poll, cancel, download."""

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
            "replicate",
            config.base_url or BASE_URL,
            auth=lambda: {"Authorization": f"Bearer {config.api_key}"},
            secrets=config.secrets,
            policy=replace(
                policy, timeout_seconds=config.timeout_seconds or policy.timeout_seconds
            ),
            sleep=sleep,
            clock=clock,
        )

    @property
    def api(self) -> ProviderApi:
        return self._api

    async def run(self, ctx: RunContext) -> None:
        async with self._api.session() as http:
            created: dict[str, Any] = {}

            async def submit() -> str:
                created.update(await self._create(ctx, http))
                return str(created["id"])

            prediction_id = await resume_or_submit(ctx, submit)
            try:
                prediction = await self._wait(ctx, http, prediction_id, created)
            except asyncio.CancelledError:
                if await ctx.cancelled():
                    await self._cancel(http, prediction_id)
                raise
            status = prediction["status"]
            if status == "canceled":
                raise JobFailed(
                    "the prediction was cancelled at replicate", reason=Reason.CANCELLED
                )
            if status == "failed":
                message = self._api.scrub(str(prediction.get("error") or "the prediction failed"))
                reason = Reason.CONTENT_POLICY if "nsfw" in message.lower() else None
                raise JobFailed(f"replicate: {message}", reason=reason)
            output = prediction.get("output")
            urls = output if isinstance(output, list) else [output] if output else []
            if not urls:
                raise JobFailed("replicate's prediction succeeded without an output")
            for url in urls:
                data, content_type = await http.download(str(url))
                await ctx.output_blob("image", data, content_type or "image/png")
            ctx.report_usage(len(urls))
            await ctx.progress(1.0, "stored the image")

    async def _create(self, ctx: RunContext, http: ApiSession) -> dict[str, Any]:
        job_input = ctx.job.input
        values: dict[str, Any] = {
            "prompt": job_input.prompt,
            "aspect_ratio": job_input.aspect_ratio or "1:1",
            "output_format": "png",
        }
        if job_input.seed is not None:
            values["seed"] = job_input.seed
        body = await http.json(
            "POST",
            f"/v1/models/{_PATHS[ctx.job.model]}/predictions",
            json={"input": values},
            headers={"Prefer": f"wait={CREATE_WAIT_SECONDS}"},
        )
        if not body.get("id"):
            raise JobFailed("replicate created a prediction without an id")
        return dict(body)

    async def _wait(
        self, ctx: RunContext, http: ApiSession, prediction_id: str, created: dict[str, Any]
    ) -> dict[str, Any]:
        """The prediction once it ended; its new log lines become the job's as they come."""
        if created.get("status") in _DONE:
            return created  # `Prefer: wait` had it done already
        logged = 0

        async def report(prediction: dict[str, Any]) -> None:
            nonlocal logged
            logs = str(prediction.get("logs") or "")
            for line in logs[logged:].splitlines():
                if line.strip():
                    await ctx.log(f"replicate: {self._api.scrub(line.strip())}")
            logged = len(logs)
            fraction = 0.5 if prediction.get("status") == "processing" else 0.1
            await ctx.progress(fraction, f"replicate: {prediction.get('status', '')}")

        return await poll(
            self._api,
            lambda: http.json("GET", f"/v1/predictions/{prediction_id}"),
            lambda p: p.get("status") in _DONE,
            deadline_seconds=DEADLINE_SECONDS,
            on_update=report,
            clock=self._clock,
        )

    async def _cancel(self, http: ApiSession, prediction_id: str) -> None:
        """Best effort: the job is already cancelled; a prediction left running only costs."""
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_SECONDS):
                await http.request("POST", f"/v1/predictions/{prediction_id}/cancel")
        except Exception:
            log.warning("could not cancel replicate prediction %s", prediction_id, exc_info=True)
