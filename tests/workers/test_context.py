"""What a provider's calls turn into: inline or blob outputs, input files, label rules."""

from __future__ import annotations

import json

import pytest

from core.backends import Backends
from core.errors import Reason
from core.jobs import BlobRef, JobError, JobInput, JobState, Output, ProviderTask
from core.ports import Claimed
from core.providers.base import RunContext
from tests.workers.conftest import StartWorker
from tests.workers.helpers import OWNER, FunctionProvider, create_job, submit, wait_for_end
from workers.context import MAX_INLINE_BYTES, AttemptContext, AttemptLost

BIG_TEXT = "x" * (MAX_INLINE_BYTES + 1)
BIG_JSON = {"items": list(range(MAX_INLINE_BYTES // 4))}


async def big_outputs(ctx: RunContext) -> None:
    await ctx.output_text("small", "fits")
    await ctx.output_text("text", BIG_TEXT)
    await ctx.output_json("data", BIG_JSON)


async def test_large_inline_outputs_are_stored_as_blobs(
    backends: Backends, start_worker: StartWorker
) -> None:
    await start_worker(FunctionProvider("test/big", big_outputs))
    job = await submit(backends, "test/big")

    done = await wait_for_end(backends, job.id)

    small, text, data = done.outputs
    assert small == Output("small", text="fits")
    assert text.blob is not None and data.blob is not None
    assert text.blob.content_type.startswith("text/plain")
    assert data.blob.content_type == "application/json"
    prefix = f"tenants/{OWNER}/jobs/{job.id}/attempt-1/"
    assert text.blob.key == prefix + "text-0.txt" and data.blob.key == prefix + "data-0.json"
    assert (await backends.blobs.get(text.blob.key)).decode() == BIG_TEXT
    assert json.loads(await backends.blobs.get(data.blob.key)) == BIG_JSON


async def test_a_provider_reads_the_jobs_input_files_and_no_others(
    backends: Backends, start_worker: StartWorker
) -> None:
    given = await backends.blobs.put(
        f"tenants/{OWNER}/uploads/in.txt", b"input bytes", "text/plain"
    )
    other = await backends.blobs.put("tenants/someone-else/secret.txt", b"secret", "text/plain")

    async def read(ctx: RunContext) -> None:
        await ctx.output_text("read", (await ctx.read_file(given)).decode())
        await ctx.read_file(other)

    await start_worker(FunctionProvider("test/read", read))
    job = await submit(backends, "test/read", JobInput(files=(given,)))

    done = await wait_for_end(backends, job.id)

    assert done.outputs == (Output("read", text="input bytes"),)
    assert done.error == JobError(Reason.PROVIDER_ERROR, "the provider failed: ValueError")


async def test_a_vanished_input_file_fails_with_invalid_input(
    backends: Backends, start_worker: StartWorker
) -> None:
    missing = BlobRef(f"tenants/{OWNER}/uploads/gone.png", "image/png")

    async def read(ctx: RunContext) -> None:
        await ctx.read_file(missing)

    await start_worker(FunctionProvider("test/read", read))
    job = await submit(backends, "test/read", JobInput(files=(missing,)))

    done = await wait_for_end(backends, job.id)

    assert done.state is JobState.FAILED and done.error is not None
    assert done.error.reason is Reason.INVALID_INPUT and missing.key in done.error.message


async def test_unsafe_labels_and_fractions_are_provider_bugs(
    backends: Backends, start_worker: StartWorker
) -> None:
    async def bad_label(ctx: RunContext) -> None:
        await ctx.output_blob("../escape", b"x", "text/plain")

    async def bad_fraction(ctx: RunContext) -> None:
        await ctx.progress(1.5)

    await start_worker(
        FunctionProvider("test/label", bad_label), FunctionProvider("test/fraction", bad_fraction)
    )
    jobs = [await submit(backends, "test/label"), await submit(backends, "test/fraction")]

    for job in jobs:
        done = await wait_for_end(backends, job.id)
        assert done.error == JobError(Reason.PROVIDER_ERROR, "the provider failed: ValueError")
        assert done.outputs == () and done.progress is None


async def claimed_context(backends: Backends, job_input: JobInput) -> AttemptContext:
    job = await create_job(backends, "test/any", job_input)
    claimed = await backends.jobs.claim(job.id)
    assert isinstance(claimed, Claimed)
    return AttemptContext(claimed.job, backends.jobs, backends.events, backends.blobs)


async def test_a_provider_gets_presigned_urls_of_the_jobs_input_files_only(
    backends: Backends,
) -> None:
    given = await backends.blobs.put(f"tenants/{OWNER}/uploads/in.png", b"png", "image/png")
    other = await backends.blobs.put("tenants/someone-else/x.png", b"png", "image/png")
    ctx = await claimed_context(backends, JobInput(files=(given,)))

    url = await ctx.file_url(given)

    assert url.startswith("http") and given.key.rsplit("/", 1)[1] in url
    with pytest.raises(ValueError, match="not an input file"):
        await ctx.file_url(other)


async def test_a_provider_task_is_recorded_on_the_job_and_fenced_by_the_attempt(
    backends: Backends,
) -> None:
    ctx = await claimed_context(backends, JobInput(prompt="x"))

    await ctx.record_provider_task("task-1")

    stored = await backends.jobs.get(ctx.job.id)
    assert stored is not None and stored.provider_task == ProviderTask("test/any", "task-1")
    assert ctx.job.provider_task == stored.provider_task
    assert not await ctx.cancelled()

    await backends.jobs.cancel(ctx.job.id, JobError(Reason.CANCELLED, "by the owner"))
    assert await ctx.cancelled()
    with pytest.raises(AttemptLost):
        await ctx.record_provider_task("task-2")
    stored = await backends.jobs.get(ctx.job.id)
    assert stored is not None and stored.provider_task == ProviderTask("test/any", "task-1")


async def test_a_fallback_runs_as_its_own_model_and_its_task_is_recorded_for_it(
    backends: Backends,
) -> None:
    ctx = await claimed_context(backends, JobInput(prompt="x"))

    ctx.run_as("test/fallback")
    await ctx.record_provider_task("t")

    stored = await backends.jobs.get(ctx.job.id)
    assert stored is not None and stored.model == "test/any"
    assert stored.provider_task == ProviderTask("test/fallback", "t")
