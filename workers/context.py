"""The RunContext of one attempt: what a provider reports goes to the job store, then live to
watchers through the event bus. Every write is fenced by the attempt number."""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

from core.errors import Reason
from core.jobs import (
    BlobRef,
    Job,
    JobEvent,
    JobState,
    LogLevel,
    LogLine,
    Output,
    Progress,
    ProviderTask,
)
from core.ports import BlobStore, EventBus, JobStore
from core.providers.base import JobFailed

log = logging.getLogger(__name__)

# Inline outputs live in the job record and travel in every GetJob and watch: keep them small.
MAX_INLINE_BYTES = 64 * 1024
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"

# What a store raises for a request it refuses: a bug that a retry cannot fix, so it fails the
# job instead of sending it round the queue again.
REFUSED = (ValueError, TypeError)

# How long a provider may take to fetch an input file through the URL it is given.
INPUT_URL_TTL = timedelta(hours=1)
# Recording a submitted provider task is worth a few tries: failing it means the next attempt
# submits (and pays) again.
TASK_RECORD_TRIES = 3
TASK_RECORD_BACKOFF_SECONDS = 0.5

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class AttemptStopped(BaseException):
    """Ends a provider's run without an outcome of its own. A BaseException, like
    asyncio.CancelledError, so that a provider's `except Exception` cannot swallow it."""


class AttemptLost(AttemptStopped):
    """The job was cancelled or taken over by a newer attempt: stop quietly, record nothing."""


class BackendUnavailable(AttemptStopped):
    """The job store or blob store failed, so this attempt cannot be recorded; the job runs
    again as its next attempt."""


class AttemptContext:
    """Implements core.providers.base.RunContext for one attempt of one job."""

    def __init__(self, job: Job, jobs: JobStore, events: EventBus, blobs: BlobStore) -> None:
        self._job = job
        self._jobs = jobs
        self._events = events
        self._blobs = blobs
        self._blob_counts: dict[str, int] = {}
        self._input_files = {ref.key for ref in job.input.files}
        self.usage_units = 0

    @property
    def job(self) -> Job:
        return self._job

    async def progress(self, fraction: float, message: str = "") -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be 0 to 1, not {fraction}")
        await self._record(Progress(fraction, message))

    async def log(self, message: str, level: LogLevel = LogLevel.INFO) -> None:
        await self._record(LogLine(message, level))

    async def output_blob(self, label: str, data: bytes, content_type: str) -> BlobRef:
        check_label(label)
        index = self._blob_counts.get(label, 0)
        self._blob_counts[label] = index + 1
        key = self.blob_key(label, index, content_type)
        try:
            ref = await self._blobs.put(key, data, content_type)
        except REFUSED:
            raise
        except Exception as error:
            raise BackendUnavailable(f"could not store output blob {key}") from error
        await self._record(Output(label, blob=ref))
        return ref

    async def output_text(self, label: str, text: str) -> None:
        check_label(label)
        data = text.encode()
        if len(data) > MAX_INLINE_BYTES:
            await self.output_blob(label, data, TEXT_CONTENT_TYPE)
        else:
            await self._record(Output(label, text=text))

    async def output_json(self, label: str, value: Any) -> None:
        check_label(label)
        # Fails (TypeError, ValueError) on what JSON cannot carry: a provider bug.
        data = json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
        if len(data) > MAX_INLINE_BYTES:
            await self.output_blob(label, data, JSON_CONTENT_TYPE)
        else:
            await self._record(Output(label, json=value))

    async def read_file(self, ref: BlobRef) -> bytes:
        self._check_input(ref)
        try:
            return await self._blobs.get(ref.key)
        except KeyError:
            raise JobFailed(
                f"input file {ref.key} no longer exists", reason=Reason.INVALID_INPUT
            ) from None
        except REFUSED:
            raise
        except Exception as error:
            raise BackendUnavailable(f"could not read input file {ref.key}") from error

    async def file_url(self, ref: BlobRef) -> str:
        self._check_input(ref)
        try:
            return await self._blobs.download_url(ref.key, INPUT_URL_TTL)
        except REFUSED:
            raise
        except Exception as error:
            raise BackendUnavailable(f"could not sign a URL for input file {ref.key}") from error

    async def cancelled(self) -> bool:
        try:
            job = await self._jobs.get(self._job.id)
        except Exception:
            log.warning("job %s: could not read its state", self._job.id, exc_info=True)
            return False
        return job is not None and job.state is JobState.CANCELLED

    async def record_provider_task(self, task_id: str) -> None:
        task = ProviderTask(model=self._job.model, id=task_id)
        for attempt in range(TASK_RECORD_TRIES):
            try:
                recorded = await self._jobs.set_provider_task(self._job.id, self._job.attempt, task)
                break
            except REFUSED:
                raise
            except Exception as error:
                if attempt == TASK_RECORD_TRIES - 1:
                    raise BackendUnavailable(
                        f"could not record provider task {task_id} on job {self._job.id}"
                    ) from error
                await asyncio.sleep(TASK_RECORD_BACKOFF_SECONDS)
        if not recorded:
            raise AttemptLost(f"job {self._job.id} attempt {self._job.attempt} lost the job")
        self._job = replace(self._job, provider_task=task)

    def run_as(self, model_id: str) -> None:
        """From now on the attempt runs on `model_id` (a fallback): `job.model` says so to the
        provider, and a task it submits is recorded for that model."""
        self._job = replace(self._job, model=model_id)

    def report_usage(self, units: int) -> None:
        if units < 0:
            raise ValueError(f"usage must not be negative, not {units}")
        self.usage_units = units

    def _check_input(self, ref: BlobRef) -> None:
        if ref.key not in self._input_files:
            raise ValueError(f"{ref.key} is not an input file of job {self._job.id}")

    def blob_key(self, label: str, index: int, content_type: str) -> str:
        """Tenant-scoped and attempt-scoped, so attempts and tenants never share a blob."""
        job = self._job
        ext = mimetypes.guess_extension(content_type.split(";", 1)[0].strip()) or ""
        return f"tenants/{job.owner}/jobs/{job.id}/attempt-{job.attempt}/{label}-{index}{ext}"

    async def _record(self, payload: Progress | LogLine | Output) -> None:
        try:
            event = await self._jobs.record(self._job.id, self._job.attempt, payload)
        except REFUSED:
            raise
        except Exception as error:
            raise BackendUnavailable(f"could not record on job {self._job.id}") from error
        if event is None:
            raise AttemptLost(f"job {self._job.id} attempt {self._job.attempt} lost the job")
        await publish(self._events, event)


def check_label(label: str) -> None:
    """Labels become part of blob keys and API fields: short and plain."""
    if not _LABEL.fullmatch(label):
        raise ValueError(f"output label {label!r} must be 1-64 letters, digits, '_' or '-'")


async def publish(events: EventBus, event: JobEvent) -> None:
    """Best effort, as the event bus is: the event is already in the job store, where watchers
    find whatever the bus misses, so a failing bus must not fail the job."""
    try:
        await events.publish(event)
    except Exception:
        log.warning(
            "could not publish event %d of job %s", event.sequence, event.job_id, exc_info=True
        )
