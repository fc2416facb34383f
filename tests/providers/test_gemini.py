"""Gemini's generateContent against a fake: text and image answers, inline input images, usage,
and its ways of refusing."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from core.backends import Backends
from core.errors import Reason
from core.jobs import JobInput
from core.providers.base import JobFailed, ProviderUnavailable
from core.providers.gemini import MAX_OUTPUT_TOKENS, GeminiProvider
from core.providers.http import HttpPolicy
from core.settings import ProviderConfig
from tests.providers.conftest import SECRET, Sleeps, blob, input_file, run
from tests.providers.fake_http import FakeApi, Reply, Request

PNG = b"gemini-made-png"


def provider(config: ProviderConfig, sleeps: Sleeps) -> GeminiProvider:
    return GeminiProvider(config, policy=HttpPolicy(retries=1), sleep=sleeps, clock=sleeps.clock)


def answer(parts: list[dict[str, Any]], finish: str = "STOP", **extra: Any) -> Reply:
    return Reply(
        200,
        {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": 2100,
                "candidatesTokenCount": 900,
                "totalTokenCount": 3000,
            },
            "modelVersion": "gemini-2.5-flash",
            **extra,
        },
    )


async def test_a_text_answer_with_an_inline_input_image(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    fake.route(
        "POST",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        lambda r, m: answer([{"text": "It is "}, {"text": "a cat."}]),
    )
    photo = await input_file(backends, b"cat-photo", "image/jpeg")

    job, ctx = await run(
        backends,
        provider(config, sleeps),
        "gemini/gemini-2.5-flash",
        JobInput(prompt="what is it?", files=(photo,), seed=3),
    )

    [request] = fake.requests
    assert request.headers["x-goog-api-key"] == SECRET
    assert "authorization" not in request.headers and not request.query
    assert request.json() == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "what is it?"},
                    {
                        "inlineData": {
                            "mimeType": "image/jpeg",
                            "data": base64.b64encode(b"cat-photo").decode(),
                        }
                    },
                ],
            }
        ],
        "generationConfig": {"seed": 3, "maxOutputTokens": MAX_OUTPUT_TOKENS},
    }
    assert [(o.label, o.text) for o in job.outputs] == [("text", "It is a cat.")]
    assert ctx.usage_units == 3


async def test_an_image_model_returns_inline_images_stored_as_blobs(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    def draw(request: Request, match: re.Match[str]) -> Reply:
        config = request.json()["generationConfig"]
        assert config == {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "16:9"},
        }
        image = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}}
        return answer([{"text": "Here it is."}, image])

    fake.route("POST", "/v1beta/models/gemini-2.5-flash-image:generateContent", draw)

    job, ctx = await run(
        backends,
        provider(config, sleeps),
        "gemini/gemini-2.5-flash-image",
        JobInput(prompt="a banana", aspect_ratio="16:9"),
    )

    image, text = job.outputs
    assert image.label == "image" and await blob(backends, image.blob) == PNG
    assert (text.label, text.text) == ("text", "Here it is.")
    assert ctx.usage_units == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {}}),
        answer([], finish="SAFETY"),
        answer([], finish="IMAGE_SAFETY"),
    ],
    ids=["prompt-blocked", "answer-stopped", "image-stopped"],
)
async def test_blocked_prompts_and_answers_are_content_policy_failures(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps, reply: Reply
) -> None:
    fake.route("POST", r"/v1beta/models/.*:generateContent", lambda r, m: reply)

    with pytest.raises(JobFailed) as raised:
        await run(backends, provider(config, sleeps), "gemini/gemini-2.5-pro", JobInput(prompt="x"))

    assert raised.value.reason is Reason.CONTENT_POLICY


async def test_errors_in_googles_shape(
    backends: Backends, fake: FakeApi, config: ProviderConfig, sleeps: Sleeps
) -> None:
    def error(code: int, status: str, message: str) -> Reply:
        return Reply(code, {"error": {"code": code, "message": message, "status": status}})

    fake.route(
        "POST",
        "/v1beta/models/gemini-2.5-pro:generateContent",
        lambda r, m: error(400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    )
    fake.route(
        "POST",
        "/v1beta/models/gemini-2.5-flash-lite:generateContent",
        lambda r, m: error(
            429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."
        ),
    )
    gemini = provider(config, sleeps)

    with pytest.raises(JobFailed) as invalid:
        await run(backends, gemini, "gemini/gemini-2.5-pro", JobInput(prompt="x"))
    with pytest.raises(ProviderUnavailable) as limited:
        await run(backends, gemini, "gemini/gemini-2.5-flash-lite", JobInput(prompt="x"))

    assert invalid.value.reason is Reason.INVALID_INPUT
    assert "invalid argument" in invalid.value.message
    assert limited.value.reason is Reason.PROVIDER_UNAVAILABLE
    assert len(fake.requests_to("POST", ".*flash-lite.*")) == 2
