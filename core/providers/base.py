"""The provider interface: how a worker runs one attempt of a job on a model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from core.catalog import ModelSpec
from core.errors import JobgateError, Reason
from core.jobs import BlobRef, Job, LogLevel


class JobFailed(JobgateError):
    """Raised by a provider to end the job FAILED with a stable reason."""

    reason = Reason.PROVIDER_ERROR


class ProviderUnavailable(JobFailed):
    """The provider cannot serve the job now (it errs, rate-limits, times out, or its circuit is
    open): the job runs again later, no sooner than `retry_after` seconds, on its fallback model
    if the catalog names one, and ends FAILED with this reason once no attempt is left."""

    reason = Reason.PROVIDER_UNAVAILABLE

    def __init__(
        self, message: str, *, retry_after: float = 0.0, reason: Reason | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class RunContext(Protocol):
    """What a provider gets for one attempt. Every call is recorded on the job and streamed to
    its watchers. Once the job is cancelled or taken over by a newer attempt, the provider's task
    is cancelled and any further call records nothing and raises an exception that ends the
    attempt quietly; when the job store cannot record, a call raises one that sends the job back
    to the queue. Both derive from BaseException: let them, and CancelledError, propagate."""

    @property
    def job(self) -> Job: ...

    async def progress(self, fraction: float, message: str = "") -> None: ...

    async def log(self, message: str, level: LogLevel = LogLevel.INFO) -> None: ...

    async def output_blob(self, label: str, data: bytes, content_type: str) -> BlobRef:
        """Stores `data` in the blob store and records it as an output, by reference."""

    async def output_text(self, label: str, text: str) -> None: ...

    async def output_json(self, label: str, value: Any) -> None: ...

    async def read_file(self, ref: BlobRef) -> bytes:
        """The content of one of the job's input files."""

    async def file_url(self, ref: BlobRef) -> str:
        """A short-lived URL that GETs one of the job's input files without credentials, for
        providers that fetch inputs themselves."""

    async def cancelled(self) -> bool:
        """Whether the job's owner cancelled it: what a provider asks, once its run is cancelled,
        before cancelling its task at the provider (not when the worker is only stopping, or a
        newer attempt took over: those resume the task)."""

    async def record_provider_task(self, task_id: str) -> None:
        """Records, durably and before the task is polled, that the provider runs `task_id` for
        `job.model`: a later attempt finds it as `job.provider_task` and resumes it."""

    def report_usage(self, units: int) -> None:
        """How many of the model's price units this attempt used: images, output seconds or
        tokens, as the model's `price.unit` says. The job is charged for the last value
        reported, at most the model's `max_units`."""


class Provider(Protocol):
    """Runs the models it lists (`ctx.job.model`; on a fallback, the fallback's id). Returning
    normally means SUCCEEDED; raising JobFailed means FAILED with its reason (INVALID_INPUT for
    input the model cannot use), except ProviderUnavailable, which runs the job again later (or
    at once on its fallback model); any other exception is a bug of the provider: its traceback
    is logged and the job retried like a transient failure. Blocking work belongs in a thread
    (asyncio.to_thread)."""

    @property
    def models(self) -> tuple[ModelSpec, ...]: ...

    async def run(self, ctx: RunContext) -> None: ...


async def resume_or_submit(ctx: RunContext, submit: Callable[[], Awaitable[str]]) -> str:
    """The provider task of this job: the one an earlier attempt submitted for this model, or a
    new one from `submit`, recorded before this returns. Never pays twice for one job."""
    task = ctx.job.provider_task
    if task is not None and task.model == ctx.job.model:
        await ctx.log(f"resuming provider task {task.id}")
        return task.id
    task_id = await submit()
    await ctx.record_provider_task(task_id)
    await ctx.log(f"submitted provider task {task_id}")
    return task_id
