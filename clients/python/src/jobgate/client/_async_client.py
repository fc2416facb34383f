"""AsyncJobClient: jobgate's JobService for asyncio code, over grpc.aio."""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from jobgate.client import _messages as messages
from jobgate.client._channel import AsyncChannelOwner
from jobgate.client._errors import from_rpc_error
from jobgate.client._retry import NO_RETRY, Backoff, RetryPolicy
from jobgate.client._upload import create_upload, send, upload_file
from jobgate.client._watch import WatchCursor
from jobgate.v1 import (
    account_pb2,
    account_service_pb2,
    account_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    model_pb2,
)

Response = TypeVar("Response", bound=Message)


class AsyncJobClient(AsyncChannelOwner):
    """Submits, watches and manages jobs. The API key is given once (or read from
    $JOBGATE_API_KEY) and sent with every call.

    Use it as `async with AsyncJobClient(address, api_key) as client:`, or call `close()`.
    Failed calls raise JobgateError subclasses; `call_timeout` bounds each unary call and
    `retry` says how calls that may safely repeat are retried while the service is unavailable.
    """

    @property
    def _stub(self) -> job_service_pb2_grpc.JobServiceStub:
        return self._stub_of(job_service_pb2_grpc.JobServiceStub)

    @property
    def _account_stub(self) -> account_service_pb2_grpc.AccountServiceStub:
        return self._stub_of(account_service_pb2_grpc.AccountServiceStub)

    async def submit(
        self,
        model: str,
        prompt: str | None = None,
        *,
        negative_prompt: str | None = None,
        files: Iterable[job_pb2.BlobRef | str] = (),
        size: str | None = None,
        aspect_ratio: str | None = None,
        duration: float | timedelta | None = None,
        seed: int | None = None,
        options: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> job_pb2.Job:
        """Creates a job and returns it, QUEUED. Retries while the service is unavailable are
        safe: they all carry one request_id (a fresh UUID unless given)."""
        spec = messages.JobSpec(
            model,
            prompt,
            negative_prompt,
            tuple(files),
            size,
            aspect_ratio,
            duration,
            seed,
            dict(options or {}),
        )
        request = messages.create_job(spec, request_id)
        return (await self._call(self._stub.CreateJob, request, self._config.retry)).job

    async def upload(
        self,
        source: str | os.PathLike[str] | bytes,
        content_type: str | None = None,
        *,
        filename: str | None = None,
    ) -> job_pb2.BlobRef:
        """Uploads a file (a path, or bytes) and returns the blob to pass in `files=`.

        The type is guessed from the file name unless given. The bytes go straight to the blob
        store over HTTP, in a thread, never through the gRPC channel."""
        file = await asyncio.to_thread(upload_file, source, content_type, filename)
        upload = await self._call(self._stub.CreateUpload, create_upload(file), self._config.retry)
        return await asyncio.to_thread(send, file, upload)

    async def get(self, name_or_id: str) -> job_pb2.Job:
        request = job_service_pb2.GetJobRequest(name=messages.job_name(name_or_id))
        return (await self._call(self._stub.GetJob, request, self._config.retry)).job

    async def cancel(self, name_or_id: str) -> job_pb2.Job:
        """Cancels the job and returns it, CANCELLED. Not retried: a repeat would fail with
        FailedPreconditionError once the first attempt got through."""
        request = job_service_pb2.CancelJobRequest(name=messages.job_name(name_or_id))
        return (await self._call(self._stub.CancelJob, request, NO_RETRY)).job

    async def list(
        self,
        state: job_pb2.Job.State | str | None = None,
        model: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[job_pb2.Job]:
        """Every job of the caller, newest first, fetched a page at a time as it is iterated."""
        page_token = ""
        while True:
            request = messages.list_jobs(state, model, page_size, page_token)
            page = await self._call(self._stub.ListJobs, request, self._config.retry)
            for job in page.jobs:
                yield job
            if not (page_token := page.next_page_token):
                return

    async def models(self) -> builtins.list[model_pb2.Model]:
        """The catalog: every model jobs can run."""
        models: builtins.list[model_pb2.Model] = []
        page_token = ""
        while True:
            request = job_service_pb2.ListModelsRequest(page_token=page_token)
            page = await self._call(self._stub.ListModels, request, self._config.retry)
            models.extend(page.models)
            if not (page_token := page.next_page_token):
                return models

    async def balance(self) -> account_pb2.Balance:
        """The caller's balance, in micros: `available_micros` and `held_micros` (held for
        jobs not yet settled)."""
        request = account_service_pb2.GetBalanceRequest()
        return (
            await self._call(self._account_stub.GetBalance, request, self._config.retry)
        ).balance

    async def usage(self, days: int = 30) -> builtins.list[account_pb2.UsageRecord]:
        """What the caller's settled jobs cost per UTC day and model, the last `days` days."""
        request = account_service_pb2.ListUsageRequest(days=days)
        return list(
            (await self._call(self._account_stub.ListUsage, request, self._config.retry)).usage
        )

    async def watch(
        self,
        name_or_id: str,
        after_sequence: int = 0,
        *,
        # The timeout becomes each call's gRPC deadline, so the server learns it too.
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        """The job's WatchJob stream: a snapshot of the job (unless `after_sequence` is set),
        then its events in order, until the server ends the stream after the terminal event.

        A dropped connection or an unavailable service is retried (see `retry`) and the watch
        resumes after the last event seen, so no event is missed or repeated. `timeout` bounds
        the whole watch; DeadlineExceededError when it runs out."""
        cursor = WatchCursor(name_or_id, after_sequence, self._config.retry, timeout)
        async for message in self._follow(cursor):
            yield message

    async def run(
        self,
        model: str,
        prompt: str | None = None,
        *,
        negative_prompt: str | None = None,
        files: Iterable[job_pb2.BlobRef | str] = (),
        size: str | None = None,
        aspect_ratio: str | None = None,
        duration: float | timedelta | None = None,
        seed: int | None = None,
        options: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - see watch()
    ) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        """Creates a job and streams it in one call (RunJob): first the job, QUEUED, then its
        events in order until it ends, as watch() streams them. A retry before the job arrives
        carries the same request_id, so it never creates a second job; a stream broken later
        resumes with WatchJob. `timeout` bounds the whole run."""
        spec = messages.JobSpec(
            model,
            prompt,
            negative_prompt,
            tuple(files),
            size,
            aspect_ratio,
            duration,
            seed,
            dict(options or {}),
        )
        cursor = WatchCursor.for_run(
            messages.create_job(spec, request_id), self._config.retry, timeout
        )
        async for message in self._follow(cursor):
            yield message

    async def _follow(self, cursor: WatchCursor) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        while True:
            call = cursor.open(self._stub, self._config.metadata)
            error = None
            try:
                async for message in call:
                    if cursor.accept(message):
                        yield message
            except grpc.aio.AioRpcError as rpc_error:
                error = from_rpc_error(rpc_error)
            finally:
                call.cancel()
            if cursor.finished:
                return
            if error is None and cursor.name and cursor.caught_up(await self.get(cursor.name)):
                return
            await asyncio.sleep(cursor.pause_after(error))

    async def result(
        self,
        name_or_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - see watch()
    ) -> job_pb2.Job:
        """Waits for the job to end and returns it as GetJob then shows it; JobFailedError
        (carrying the job) if it ended FAILED or CANCELLED, DeadlineExceededError if `timeout`
        seconds pass first."""
        async for _ in self.watch(name_or_id, timeout=timeout):
            pass
        return messages.final_job(await self.get(name_or_id))

    async def _call(
        self,
        method: Callable[..., Awaitable[Response]],
        request: Message,
        retry: RetryPolicy,
    ) -> Response:
        backoff = Backoff(retry)
        while True:
            try:
                return await method(
                    request, metadata=self._config.metadata, timeout=self._config.call_timeout
                )
            except grpc.aio.AioRpcError as rpc_error:
                error = from_rpc_error(rpc_error)
            await asyncio.sleep(backoff.pause_after(error))
