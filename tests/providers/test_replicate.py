"""Replicate's predictions against a fake: create (with `Prefer: wait`), every status, logs as
they come, outputs downloaded, and a cancelled job cancelling its prediction."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from core.backends import Backends
from core.errors import Reason
from core.jobs import JobError, JobInput, JobState, LogLine
from core.providers.base import JobFailed
from core.providers.http import HttpPolicy
from core.providers.replicate import CREATE_WAIT_SECONDS, ReplicateProvider
from core.settings import ProviderConfig
from tests.providers.conftest import SECRET, Sleeps, attempt, blob
from tests.providers.fake_http import FakeApi, Reply, Request
from tests.workers.conftest import StartWorker
from tests.workers.helpers import submit, until, wait_for_state

PNG = b"flux-png"


def provider(config: ProviderConfig, sleeps: Sleeps | None = None) -> ReplicateProvider:
    if sleeps is None:  # run by a worker: real, short waits
        return ReplicateProvider(config, policy=HttpPolicy(poll_interval_seconds=0.01))
    return ReplicateProvider(config, policy=HttpPolicy(), sleep=sleeps, clock=sleeps.clock)


def prediction(status: str, **extra: Any) -> Reply:
    body = {
        "id": "p-77",
        "model": "black-forest-labs/flux-schnell",
        "status": status,
        "input": {"prompt": "a fox"},
        "output": None,
        "error": None,
        "logs": "",
        "urls": {"get": "…/v1/predictions/p-77", "cancel": "…/v1/predictions/p-77/cancel"},
        **extra,
    }
    return Reply(201 if status == "starting" else 200, body)


async def test_a_prediction_is_created_polled_with_its_logs_and_its_output_downloaded(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    states = iter(
        [
            prediction("processing", logs="Using seed: 5\n"),
            prediction("processing", logs="Using seed: 5\n50% done\n"),
            prediction(
                "succeeded",
                logs="Using seed: 5\n50% done\n",
                output=[f"{fake.url}/delivery/out-0.png"],
            ),
        ]
    )
    fake.route(
        "POST",
        "/v1/models/black-forest-labs/flux-schnell/predictions",
        lambda r, m: prediction("starting"),
    )
    fake.route("GET", "/v1/predictions/p-77", lambda r, m: next(states))
    fake.route(
        "GET", "/delivery/out-0.png", lambda r, m: Reply(200, PNG, {"content-type": "image/png"})
    )
    job, ctx = await attempt(
        backends, "replicate/flux-schnell", JobInput(prompt="a fox", aspect_ratio="16:9", seed=5)
    )

    await provider(config, sleeps).run(ctx)

    create = fake.requests[0]
    assert create.headers["authorization"] == f"Bearer {SECRET}"
    assert create.headers["prefer"] == f"wait={CREATE_WAIT_SECONDS}"
    assert create.json() == {
        "input": {"prompt": "a fox", "aspect_ratio": "16:9", "output_format": "png", "seed": 5}
    }
    stored = await backends.jobs.get(job.id)
    assert stored is not None and stored.provider_task is not None
    assert stored.provider_task.id == "p-77"
    assert await blob(backends, stored.outputs[0].blob) == PNG
    logs = [
        e.payload.message
        for e in await backends.jobs.events(job.id, 0)
        if isinstance(e.payload, LogLine)
    ]
    assert [line for line in logs if line.startswith("replicate:")] == [
        "replicate: Using seed: 5",
        "replicate: 50% done",
    ]
    assert ctx.usage_units == 1


async def test_a_prediction_done_within_the_create_wait_is_not_polled(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    fake.route(
        "POST",
        "/v1/models/black-forest-labs/flux-1.1-pro/predictions",
        lambda r, m: prediction("succeeded", output=f"{fake.url}/delivery/one.png"),
    )
    fake.route("GET", "/delivery/one.png", lambda r, m: Reply(200, PNG))
    _, ctx = await attempt(backends, "replicate/flux-1.1-pro", JobInput(prompt="x"))

    await provider(config, sleeps).run(ctx)

    assert not fake.requests_to("GET", "/v1/predictions/.*")
    assert ctx.usage_units == 1


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            prediction("failed", error="NSFW content detected. Try a different prompt."),
            Reason.CONTENT_POLICY,
        ),
        (prediction("failed", error="CUDA out of memory"), Reason.PROVIDER_ERROR),
        (prediction("canceled"), Reason.CANCELLED),
    ],
    ids=["nsfw", "failed", "canceled"],
)
async def test_a_prediction_that_did_not_succeed_ends_the_job_with_its_reason(
    backends: Backends,
    fake: FakeApi,
    config: ProviderConfig,
    sleeps: Sleeps,
    reply: Reply,
    reason: Reason,
) -> None:
    fake.route(
        "POST",
        "/v1/models/black-forest-labs/flux-dev/predictions",
        lambda r, m: prediction("starting"),
    )
    fake.route("GET", "/v1/predictions/p-77", lambda r, m: reply)
    _, ctx = await attempt(backends, "replicate/flux-dev", JobInput(prompt="x"))

    with pytest.raises(JobFailed) as raised:
        await provider(config, sleeps).run(ctx)

    assert raised.value.reason is reason


async def test_replicates_problem_details_errors(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    fake.route(
        "POST",
        "/v1/models/black-forest-labs/flux-dev/predictions",
        lambda r, m: Reply(
            422,
            {
                "title": "Input validation failed",
                "status": 422,
                "detail": "- input.aspect_ratio: must be one of ...",
            },
        ),
    )
    _, ctx = await attempt(backends, "replicate/flux-dev", JobInput(prompt="x"))

    with pytest.raises(JobFailed) as raised:
        await provider(config, sleeps).run(ctx)

    assert raised.value.reason is Reason.INVALID_INPUT
    assert "input.aspect_ratio" in raised.value.message


async def test_cancelling_the_job_cancels_its_prediction(
    backends: Backends, fake: FakeApi, config: ProviderConfig, start_worker: StartWorker
) -> None:
    fake.route(
        "POST",
        "/v1/models/black-forest-labs/flux-schnell/predictions",
        lambda r, m: prediction("starting"),
    )
    fake.route("GET", "/v1/predictions/p-77", lambda r, m: prediction("processing"))
    fake.route("POST", "/v1/predictions/p-77/cancel", lambda r, m: prediction("canceled"))
    await start_worker(provider(config))
    job = await submit(backends, "replicate/flux-schnell", JobInput(prompt="x"))
    await until(lambda: len(fake.requests_to("GET", "/v1/predictions/p-77")) >= 2)

    result = await backends.jobs.cancel(job.id, JobError(Reason.CANCELLED, "changed my mind"))
    assert result is not None and result[1] is not None
    await backends.events.publish(result[1])

    await until(lambda: bool(fake.requests_to("POST", "/v1/predictions/p-77/cancel")))
    assert (await wait_for_state(backends, job.id, JobState.CANCELLED)).error is not None


async def test_a_worker_stopping_leaves_the_prediction_running_for_the_next_attempt(
    backends: Backends, fake: FakeApi, config: ProviderConfig, start_worker: StartWorker
) -> None:
    polled = asyncio.Event()

    def poll(request: Request, match: re.Match[str]) -> Reply:
        polled.set()
        return prediction("processing")

    fake.route(
        "POST",
        "/v1/models/black-forest-labs/flux-schnell/predictions",
        lambda r, m: prediction("starting"),
    )
    fake.route("GET", "/v1/predictions/p-77", poll)
    worker = await start_worker(provider(config))
    await submit(backends, "replicate/flux-schnell", JobInput(prompt="x"))
    await polled.wait()

    await worker.stop(0)

    assert not fake.requests_to("POST", "/v1/predictions/p-77/cancel")
