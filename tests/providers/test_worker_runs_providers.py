"""Remote providers under the real worker: a paid task is never submitted twice across a worker
going away, an unavailable provider sends its jobs back to wait (or to the fallback model), and
what a job ends with when nothing helps."""

from __future__ import annotations

import asyncio
import re

from core.backends import Backends
from core.errors import Reason
from core.jobs import JobInput, JobState, LogLine, ProviderTask
from core.providers.gemini import GeminiProvider
from core.providers.http import REDACTED, HttpPolicy
from core.providers.kling import KlingProvider
from core.providers.openai import OpenAIProvider
from core.settings import ProviderConfig
from tests.providers.conftest import SECRET
from tests.providers.fake_http import FakeApi, Reply, Request
from tests.workers.conftest import StartWorker
from tests.workers.helpers import stored_events, submit, until, wait_for, wait_for_end
from workers.retry import RetryPolicy

QUICK = HttpPolicy(retries=0, poll_interval_seconds=0.01, breaker_failures=100)


def kling(config: ProviderConfig) -> KlingProvider:
    return KlingProvider(config, policy=QUICK)


def log_lines(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.payload.message for e in events if isinstance(e.payload, LogLine)]


async def test_a_redelivered_video_job_resumes_its_paid_task_instead_of_submitting_again(
    backends: Backends, fake: FakeApi, config: ProviderConfig, start_worker: StartWorker
) -> None:
    rendered = asyncio.Event()

    def query(request: Request, match: re.Match[str]) -> Reply:
        if not rendered.is_set():
            return Reply(200, {"code": 0, "data": {"task_id": "842", "task_status": "processing"}})
        video = {"id": "v", "url": f"{fake.url}/cdn/v.mp4", "duration": "5"}
        data = {"task_id": "842", "task_status": "succeed", "task_result": {"videos": [video]}}
        return Reply(200, {"code": 0, "message": "SUCCEED", "data": data})

    fake.route(
        "POST",
        "/v1/videos/text2video",
        lambda r, m: Reply(
            200, {"code": 0, "data": {"task_id": "842", "task_status": "submitted"}}
        ),
    )
    fake.route("GET", "/v1/videos/text2video/842", query)
    fake.route("GET", "/cdn/v.mp4", lambda r, m: Reply(200, b"video"))
    first = await start_worker(kling(config), concurrency=1)
    job = await submit(backends, "kling/kling-v2-master", JobInput(prompt="a fox"))
    await until(lambda: len(fake.requests_to("GET", "/v1/videos/text2video/842")) >= 2)

    # The worker goes away mid-poll (a crash or a restart): its delivery goes back to the queue.
    await first.stop(0)
    rendered.set()
    await start_worker(kling(config), concurrency=1)  # another process: a provider of its own

    done = await wait_for_end(backends, job.id)
    assert done.state is JobState.SUCCEEDED and done.attempt == 2
    assert len(fake.requests_to("POST", "/v1/videos/text2video")) == 1
    assert done.provider_task == ProviderTask("kling/kling-v2-master", "text2video/842")
    assert "resuming provider task text2video/842" in log_lines(
        await stored_events(backends, job.id)
    )


def failing_openai(fake: FakeApi) -> None:
    fake.route(
        "POST",
        "/v1/chat/completions",
        lambda r, m: Reply(503, {"error": {"message": f"overloaded (key {SECRET})"}}),
    )


async def test_a_job_whose_provider_is_unavailable_runs_on_its_fallback_model(
    backends: Backends, fake: FakeApi, config: ProviderConfig, start_worker: StartWorker
) -> None:
    failing_openai(fake)
    fake.route(
        "POST",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        lambda r, m: Reply(
            200,
            {
                "candidates": [
                    {"content": {"parts": [{"text": "from gemini"}]}, "finishReason": "STOP"}
                ],
                "usageMetadata": {"totalTokenCount": 10},
            },
        ),
    )
    await start_worker(OpenAIProvider(config, policy=QUICK), GeminiProvider(config, policy=QUICK))

    job = await submit(backends, "openai/gpt-4o-mini", JobInput(prompt="hi"))

    done = await wait_for_end(backends, job.id)
    assert done.state is JobState.SUCCEEDED and done.model == "openai/gpt-4o-mini"
    assert [o.text for o in done.outputs] == ["from gemini"]
    [line] = [m for m in log_lines(await stored_events(backends, job.id)) if "running on" in m]
    assert "openai/gpt-4o-mini is unavailable" in line and "gemini/gemini-2.5-flash" in line
    assert SECRET not in line


async def test_while_the_circuit_is_open_jobs_are_sent_back_to_wait_for_it(
    backends: Backends, fake: FakeApi, config: ProviderConfig, start_worker: StartWorker
) -> None:
    failing_openai(fake)
    openai = OpenAIProvider(
        config, policy=HttpPolicy(retries=0, breaker_failures=1, breaker_cooldown_seconds=600)
    )
    await start_worker(openai, concurrency=1, retry=RetryPolicy(max_attempts=3, base_seconds=0.01))

    first = await submit(backends, "openai/gpt-4o", JobInput(prompt="opens the circuit"))
    second = await submit(backends, "openai/gpt-4o", JobInput(prompt="meets it open"))

    for job_id in (first.id, second.id):
        # Queued, running, "asking openai/gpt-4o", then the attempt's end: a retry, later.
        await wait_for(backends, job_id, lambda j: j.event_sequence >= 4)
        [message] = log_lines(await stored_events(backends, job_id))
        found = re.search(r"retrying in ([\d.]+) s", message)
        assert found is not None, message
        delay = float(found[1])
        assert delay > 590  # not failed, not hammering: back once the circuit may close
        job = await backends.jobs.get(job_id)
        assert job is not None and job.state is JobState.RUNNING
    # Only the first job reached the provider.
    assert len(fake.requests) == 1


async def test_a_provider_unavailable_through_every_attempt_fails_the_job_with_a_stable_reason(
    backends: Backends, fake: FakeApi, config: ProviderConfig, start_worker: StartWorker
) -> None:
    failing_openai(fake)
    await start_worker(OpenAIProvider(config, policy=QUICK))

    job = await submit(backends, "openai/gpt-4o", JobInput(prompt="hi"))

    done = await wait_for_end(backends, job.id)
    assert done.state is JobState.FAILED and done.error is not None
    assert done.error.reason is Reason.PROVIDER_UNAVAILABLE
    assert "HTTP 503" in done.error.message
    assert SECRET not in done.error.message and REDACTED in done.error.message
