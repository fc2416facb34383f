"""The built-in local models, run by a real worker on the embedded backends."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from core.backends import Backends
from core.errors import Reason
from core.jobs import (
    JobError,
    JobInput,
    JobState,
    LogLine,
    Output,
    Progress,
    StateChanged,
)
from tests.workers.conftest import StartWorker
from tests.workers.helpers import (
    OWNER,
    bus_events,
    create_job,
    enqueue,
    stored_events,
    submit,
    wait_for_end,
)


async def test_echo_returns_its_prompt_and_options(
    backends: Backends, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await submit(
        backends, "local/echo", JobInput(prompt="hello", options={"tone": "dry", "n": 2})
    )

    done = await wait_for_end(backends, job.id)

    assert done.state is JobState.SUCCEEDED and done.attempt == 1 and done.error is None
    assert done.outputs == (
        Output("echo", text="hello"),
        Output("options", json={"tone": "dry", "n": 2}),
    )


async def test_echo_without_options_returns_only_the_prompt(
    backends: Backends, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await submit(backends, "local/echo", JobInput(prompt="just this"))

    done = await wait_for_end(backends, job.id)

    assert done.outputs == (Output("echo", text="just this"),)


async def test_sleep_reports_ordered_progress_and_logs_with_gapless_sequences(
    backends: Backends, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await create_job(backends, "local/sleep", JobInput(prompt="nap", duration_seconds=0.2))
    async with bus_events(backends, job.id) as live:
        await enqueue(backends, job)
        done = await wait_for_end(backends, job.id)

    events = await stored_events(backends, job.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert done.event_sequence == len(events)
    # Everything the worker recorded reached the bus too, in the same order.
    assert live == events[1:]
    payloads = [e.payload for e in events]
    assert payloads[:2] == [StateChanged(JobState.QUEUED), StateChanged(JobState.RUNNING)]
    assert payloads[-1] == StateChanged(JobState.SUCCEEDED)
    fractions = [p.fraction for p in payloads if isinstance(p, Progress)]
    assert fractions == pytest.approx([i / 10 for i in range(1, 11)])
    assert all(p.message for p in payloads if isinstance(p, Progress))
    assert len([p for p in payloads if isinstance(p, LogLine)]) >= 3
    assert done.outputs == (Output("result", text="slept 0.2 s: nap"),)
    assert done.progress == Progress(1.0, "slept 0.2 of 0.2 s")
    assert {e.attempt for e in events[1:]} == {1}


async def test_image_stores_a_png_blob_under_its_tenant_and_attempt(
    backends: Backends, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await submit(backends, "local/image", JobInput(prompt="a red fox", size="64x48"))

    done = await wait_for_end(backends, job.id)

    assert done.state is JobState.SUCCEEDED
    (output,) = done.outputs
    ref = output.blob
    assert output.label == "image" and ref is not None
    assert ref.key == f"tenants/{OWNER}/jobs/{job.id}/attempt-1/image-0.png"
    assert ref.content_type == "image/png"
    data = await backends.blobs.get(ref.key)
    assert ref.size_bytes == len(data) and ref.sha256 == hashlib.sha256(data).hexdigest()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == (64, 48)


async def test_image_defaults_to_512_square_and_the_seed_picks_the_colours(
    backends: Backends, start_worker: StartWorker
) -> None:
    await start_worker()
    jobs = [
        await submit(backends, "local/image", JobInput(prompt="same", seed=seed))
        for seed in (7, 7, 8)
    ]

    images = []
    for job in jobs:
        done = await wait_for_end(backends, job.id)
        assert done.outputs[0].blob is not None
        images.append(await backends.blobs.get(done.outputs[0].blob.key))

    with Image.open(io.BytesIO(images[0])) as first:
        assert first.size == (512, 512)
    assert images[0] == images[1] != images[2]


async def test_fail_ends_failed_with_requested_failure(
    backends: Backends, start_worker: StartWorker
) -> None:
    await start_worker()
    default = await submit(backends, "local/fail", JobInput(prompt="please fail"))
    custom = await submit(backends, "local/fail", JobInput(options={"message": "boom"}))

    failed = await wait_for_end(backends, default.id)
    boom = await wait_for_end(backends, custom.id)

    assert failed.state is JobState.FAILED and failed.error is not None
    assert failed.error.reason is Reason.REQUESTED_FAILURE and failed.error.message
    assert boom.error == JobError(Reason.REQUESTED_FAILURE, "boom")


async def test_fail_after_a_while_runs_visibly_first(
    backends: Backends, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await submit(backends, "local/fail", JobInput(options={"after_seconds": 0.1}))

    done = await wait_for_end(backends, job.id)

    events = await stored_events(backends, job.id)
    states = [e.payload.state for e in events if isinstance(e.payload, StateChanged)]
    assert states == [JobState.QUEUED, JobState.RUNNING, JobState.FAILED]
    assert any(isinstance(e.payload, Progress) for e in events)
    assert done.error is not None and done.error.reason is Reason.REQUESTED_FAILURE


@pytest.mark.parametrize(
    ("model", "job_input", "named"),
    [
        ("local/sleep", JobInput(duration_seconds=3601), "input.duration"),
        ("local/sleep", JobInput(duration_seconds=-1), "input.duration"),
        ("local/sleep", JobInput(prompt="no duration"), "input.duration"),
        ("local/image", JobInput(prompt="x", size="big"), "input.size"),
        ("local/image", JobInput(prompt="x", size="8x64"), "width"),
        ("local/image", JobInput(prompt="x", size="64x4096"), "height"),
        ("local/fail", JobInput(options={"after_seconds": "soon"}), "options.after_seconds"),
        ("local/fail", JobInput(options={"after_seconds": 9999}), "options.after_seconds"),
    ],
)
async def test_bad_input_fails_with_invalid_input_naming_the_problem(
    backends: Backends, start_worker: StartWorker, model: str, job_input: JobInput, named: str
) -> None:
    await start_worker()
    job = await submit(backends, model, job_input)

    done = await wait_for_end(backends, job.id)

    assert done.state is JobState.FAILED and done.error is not None
    assert done.error.reason is Reason.INVALID_INPUT
    assert named in done.error.message


async def test_a_crashing_provider_fails_the_job_with_provider_error(
    backends: Backends, start_worker: StartWorker, caplog: pytest.LogCaptureFixture
) -> None:
    await start_worker()
    job = await submit(backends, "local/fail", JobInput(options={"crash": True}))

    done = await wait_for_end(backends, job.id)

    assert done.state is JobState.FAILED
    assert done.error == JobError(Reason.PROVIDER_ERROR, "the provider failed: RuntimeError")
    (logged,) = [r for r in caplog.records if r.exc_info and job.id in r.getMessage()]
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError
