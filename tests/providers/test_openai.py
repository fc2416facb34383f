"""OpenAI images and text against a fake of its API: the documented requests and answers, its
error shapes and rate limits, and what jobgate makes of them. The shared HTTP behaviour
(retries, Retry-After, circuit breaker, timeouts, scrubbing) is specified here once, on OpenAI."""

from __future__ import annotations

import asyncio
import base64
import re

import httpx
import pytest

from core.backends import Backends
from core.errors import Reason
from core.jobs import JobInput
from core.providers.base import JobFailed, ProviderUnavailable
from core.providers.http import REDACTED, HttpPolicy
from core.providers.openai import MAX_OUTPUT_TOKENS, OpenAIProvider
from core.settings import ProviderConfig
from tests.providers.conftest import SECRET, Sleeps, blob, input_file, run
from tests.providers.fake_http import FakeApi, FormFile, Reply, Request

PNG = b"\x89PNG\r\n\x1a\n-a-generated-image"
FAST = HttpPolicy(retries=2, backoff_seconds=1.0, breaker_failures=3, breaker_cooldown_seconds=30)


def provider(config: ProviderConfig, sleeps: Sleeps, policy: HttpPolicy = FAST) -> OpenAIProvider:
    return OpenAIProvider(config, policy=policy, sleep=sleeps, clock=sleeps.clock)


def image_reply(request: Request, match: re.Match[str]) -> Reply:
    return Reply(200, {"created": 1, "data": [{"b64_json": base64.b64encode(PNG).decode()}]})


def chat_reply(request: Request, match: re.Match[str]) -> Reply:
    return Reply(
        200,
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "A red fox.", "refusal": None},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 301, "total_tokens": 1501},
        },
    )


async def test_an_image_is_generated_stored_as_a_blob_and_counted(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    fake.route("POST", "/v1/images/generations", image_reply)

    job, ctx = await run(
        backends,
        provider(config, sleeps),
        "openai/gpt-image-1",
        JobInput(prompt="a red fox", size="1536x1024"),
    )

    [request] = fake.requests
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.json() == {
        "model": "gpt-image-1",
        "prompt": "a red fox",
        "size": "1536x1024",
        "n": 1,
    }
    [output] = job.outputs
    assert output.label == "image" and output.blob is not None
    assert output.blob.content_type == "image/png"
    assert await blob(backends, output.blob) == PNG
    assert ctx.usage_units == 1


async def test_input_images_are_uploaded_to_the_edits_endpoint(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    fake.route("POST", "/v1/images/edits", image_reply)
    cat = await input_file(backends, b"cat-image-bytes")

    job, _ = await run(
        backends,
        provider(config, sleeps),
        "openai/gpt-image-1",
        JobInput(prompt="give it a hat", files=(cat,)),
    )

    [request] = fake.requests
    form = request.form()
    assert form["model"] == ["gpt-image-1"] and form["prompt"] == ["give it a hat"]
    [upload] = form["image[]"]
    assert isinstance(upload, FormFile)
    assert (upload.data, upload.content_type) == (b"cat-image-bytes", "image/png")
    assert len(job.outputs) == 1


async def test_an_image_given_as_a_url_is_downloaded_never_passed_on(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    fake.route(
        "POST",
        "/v1/images/generations",
        lambda r, m: Reply(200, {"data": [{"url": f"{fake.url}/files/img-1.png"}]}),
    )
    fake.route(
        "GET", "/files/img-1.png", lambda r, m: Reply(200, PNG, {"content-type": "image/png"})
    )

    job, _ = await run(
        backends, provider(config, sleeps), "openai/dall-e-3", JobInput(prompt="a fox")
    )

    generate, download = fake.requests
    assert generate.json()["response_format"] == "b64_json"
    # The file URL is fetched without jobgate's key: it is the provider's signed URL.
    assert "authorization" not in download.headers
    [output] = job.outputs
    assert output.text is None and await blob(backends, output.blob) == PNG


async def test_a_text_model_sees_input_images_through_presigned_urls_and_reports_tokens(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    fetched: list[bytes] = []

    async def chat(request: Request, match: re.Match[str]) -> Reply:
        image_url = request.json()["messages"][0]["content"][1]["image_url"]["url"]
        async with httpx.AsyncClient() as client:  # as OpenAI does: fetch it, no credentials
            fetched.append((await client.get(image_url)).content)
        return chat_reply(request, match)

    fake.route("POST", "/v1/chat/completions", chat)
    photo = await input_file(backends, b"photo-bytes", "image/jpeg")

    job, ctx = await run(
        backends,
        provider(config, sleeps),
        "openai/gpt-4o-mini",
        JobInput(prompt="what is this?", files=(photo,), seed=7),
    )

    body = fake.requests[0].json()
    assert body["model"] == "gpt-4o-mini" and body["seed"] == 7
    assert body["max_completion_tokens"] == MAX_OUTPUT_TOKENS
    assert body["messages"][0]["content"][0] == {"type": "text", "text": "what is this?"}
    assert fetched == [b"photo-bytes"]
    assert [(o.label, o.text) for o in job.outputs] == [("text", "A red fox.")]
    assert ctx.usage_units == 2  # 1,501 tokens: two thousands begun


async def test_a_rate_limit_is_retried_after_the_time_the_provider_asks(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    answers = iter(
        [
            Reply(
                429,
                {"error": {"message": "Rate limit reached", "type": "requests", "code": None}},
                {"retry-after": "7"},
            ),
            Reply(503, {"error": {"message": "overloaded"}}),
        ]
    )
    fake.route("POST", "/v1/chat/completions", lambda r, m: next(answers, None) or chat_reply(r, m))

    job, _ = await run(backends, provider(config, sleeps), "openai/gpt-4o", JobInput(prompt="hi"))

    assert len(fake.requests) == 3
    assert sleeps.waits == [7.0, 2.0]  # Retry-After, then the backoff of the second retry
    assert job.outputs[0].text == "A red fox."


async def test_a_rate_limit_longer_than_a_worker_should_hold_sends_the_job_back_later(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    fake.route(
        "POST",
        "/v1/chat/completions",
        lambda r, m: Reply(429, {"error": {"message": "slow down"}}, {"retry-after": "120"}),
    )

    with pytest.raises(ProviderUnavailable) as raised:
        await run(backends, provider(config, sleeps), "openai/gpt-4o", JobInput(prompt="hi"))

    assert len(fake.requests) == 1 and sleeps.waits == []
    assert raised.value.retry_after == 120.0
    assert raised.value.reason is Reason.PROVIDER_UNAVAILABLE


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (
            429,
            {
                "message": "You exceeded your current quota",
                "type": "insufficient_quota",
                "code": "insufficient_quota",
            },
            Reason.QUOTA_EXCEEDED,
        ),
        (
            400,
            {
                "message": "Your request was rejected by our safety system",
                "type": "image_generation_user_error",
                "code": "content_policy_violation",
            },
            Reason.CONTENT_POLICY,
        ),
        (
            400,
            {
                "message": "Invalid value for 'size'",
                "type": "invalid_request_error",
                "param": "size",
                "code": "invalid_value",
            },
            Reason.INVALID_INPUT,
        ),
        (
            401,
            {
                "message": "Incorrect API key provided",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            },
            Reason.PROVIDER_ERROR,
        ),
    ],
)
async def test_provider_errors_end_the_job_with_a_stable_reason_without_retrying(
    backends: Backends,
    fake: FakeApi,
    config: ProviderConfig,
    sleeps: Sleeps,
    status: int,
    error: dict[str, object],
    reason: Reason,
) -> None:
    fake.route("POST", "/v1/images/generations", lambda r, m: Reply(status, {"error": error}))

    with pytest.raises(JobFailed) as raised:
        await run(backends, provider(config, sleeps), "openai/gpt-image-1", JobInput(prompt="x"))

    assert raised.value.reason is reason
    assert str(error["message"]) in raised.value.message
    assert len(fake.requests) == 1


async def test_a_refused_answer_is_a_content_policy_failure(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    def filtered(request: Request, match: re.Match[str]) -> Reply:
        reply = chat_reply(request, match)
        assert isinstance(reply.body, dict)
        reply.body["choices"][0]["finish_reason"] = "content_filter"
        return reply

    fake.route("POST", "/v1/chat/completions", filtered)

    with pytest.raises(JobFailed) as raised:
        await run(backends, provider(config, sleeps), "openai/gpt-4o", JobInput(prompt="x"))
    assert raised.value.reason is Reason.CONTENT_POLICY


async def test_a_provider_error_echoing_the_key_is_scrubbed(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {SECRET}.", "code": "invalid"}}
    fake.route("POST", "/v1/images/generations", lambda r, m: Reply(401, echo))
    fake.route(
        "POST", "/v1/chat/completions", lambda r, m: Reply(500, f"upstream said Bearer {SECRET}")
    )

    with pytest.raises(JobFailed) as refused:
        await run(backends, provider(config, sleeps), "openai/gpt-image-1", JobInput(prompt="x"))
    with pytest.raises(ProviderUnavailable) as unavailable:
        await run(backends, provider(config, sleeps), "openai/gpt-4o", JobInput(prompt="x"))

    for error in (refused.value, unavailable.value):
        assert SECRET not in error.message and SECRET not in str(error)
        assert REDACTED in error.message
    assert SECRET not in repr(config)


async def test_the_circuit_opens_after_repeated_failures_and_lets_calls_through_after_cooldown(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    healthy = asyncio.Event()
    fake.route(
        "POST",
        "/v1/chat/completions",
        lambda r, m: chat_reply(r, m) if healthy.is_set() else Reply(502, "bad gateway"),
    )
    openai = provider(
        config, sleeps, HttpPolicy(retries=2, breaker_failures=3, breaker_cooldown_seconds=30)
    )

    # Three failed tries in one job open the circuit.
    with pytest.raises(ProviderUnavailable):
        await run(backends, openai, "openai/gpt-4o", JobInput(prompt="first"))
    assert len(fake.requests) == 3

    # While open, jobs do not reach the provider: they are sent back until it may be closed.
    with pytest.raises(ProviderUnavailable) as waiting:
        await run(backends, openai, "openai/gpt-4o", JobInput(prompt="second"))
    assert len(fake.requests) == 3
    assert 0 < waiting.value.retry_after <= 30
    assert "circuit open" in waiting.value.message

    # After the cooldown a call goes through; its success closes the circuit.
    sleeps.now += 30
    healthy.set()
    job, _ = await run(backends, openai, "openai/gpt-4o", JobInput(prompt="third"))
    assert job.outputs[0].text == "A red fox." and len(fake.requests) == 4
    assert openai.api.breaker.open_for() == 0


async def test_an_unanswered_request_times_out_as_provider_timeout(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    never = asyncio.Event()

    async def hang(request: Request, match: re.Match[str]) -> Reply:
        await never.wait()
        raise AssertionError("unreachable")

    fake.route("POST", "/v1/chat/completions", hang)
    slow = ProviderConfig(api_key=SECRET, base_url=fake.url, timeout_seconds=0.2)

    with pytest.raises(ProviderUnavailable) as raised:
        await run(
            backends,
            provider(slow, sleeps, HttpPolicy(retries=1)),
            "openai/gpt-4o",
            JobInput(prompt="x"),
        )

    assert raised.value.reason is Reason.PROVIDER_TIMEOUT
    assert len(fake.requests) == 2
