"""The JobService servicer: checks requests, records and queues jobs, answers from the store."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import grpc
from jobgate.v1 import job_service_pb2, job_service_pb2_grpc

from core.backends import Backends
from core.errors import FailedPrecondition, InvalidArgument, NotFound, Reason
from core.jobs import BlobRef, Job, JobError, JobEvent, NewJob
from core.jobs import job_id_from_name as parse_job_name
from core.ports import JobMessage, JobQuery, Principal
from core.settlement import settle_ended
from server import listing
from server.auth import current_principal
from server.convert import JobRenderer, job_input_from_proto, model_to_proto
from server.holds import Holds
from server.outbox import Outbox
from server.status import Unavailable, stream_errors, unary_errors
from server.uploads import Uploads, tenant_prefix
from server.watch import JobWatcher

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
MAX_REQUEST_ID_LENGTH = 128
CANCELLED_BY_OWNER = JobError(Reason.CANCELLED, "cancelled by its owner")
# 0.25 + 0.5 + 1 + 2 s of retries: longer than a broker reconnect, short for a caller to wait.
PUBLISH_ATTEMPTS = 5
PUBLISH_BACKOFF_SECONDS = 0.25


def new_job_id() -> str:
    """32 hex digits: the creation millisecond, then 80 random bits. Ids sort by creation."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


class JobService(job_service_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        backends: Backends,
        renderer: JobRenderer,
        watcher: JobWatcher,
        draining: asyncio.Event,
        uploads: Uploads,
        outbox: Outbox,
    ) -> None:
        self._backends = backends
        self._outbox = outbox
        self._render = renderer
        self._watcher = watcher
        self._draining = draining
        self._uploads = uploads
        self._holds = Holds(backends)
        self._submissions: set[asyncio.Task[Job]] = set()

    @unary_errors
    async def CreateJob(
        self, request: job_service_pb2.CreateJobRequest, context: Context
    ) -> job_service_pb2.CreateJobResponse:
        principal = current_principal()
        job = await self._create(principal, await self._new_job(principal.owner, request))
        return job_service_pb2.CreateJobResponse(job=await self._render.job(job))

    @unary_errors
    async def GetJob(
        self, request: job_service_pb2.GetJobRequest, context: Context
    ) -> job_service_pb2.GetJobResponse:
        job = await self._owned_job(request.name)
        return job_service_pb2.GetJobResponse(job=await self._render.job(job))

    @unary_errors
    async def ListJobs(
        self, request: job_service_pb2.ListJobsRequest, context: Context
    ) -> job_service_pb2.ListJobsResponse:
        owner = current_principal().owner
        job_filter = listing.parse_filter(request.filter)
        size = listing.page_size(request.page_size)
        cursor = listing.decode_job_token(request.page_token, job_filter)
        query = JobQuery(
            owner=owner,
            limit=size + 1,  # one more than asked tells whether another page follows
            state=job_filter.state,
            model=job_filter.model,
            before=(cursor.create_time, cursor.job_id) if cursor else None,
        )
        jobs = await self._backends.jobs.list(query)
        page = jobs[:size]
        token = ""
        if len(jobs) > size:
            last = page[-1]
            token = listing.encode_job_token(listing.Cursor(last.create_time, last.id), job_filter)
        return job_service_pb2.ListJobsResponse(
            jobs=[await self._render.job(job) for job in page], next_page_token=token
        )

    @unary_errors
    async def CancelJob(
        self, request: job_service_pb2.CancelJobRequest, context: Context
    ) -> job_service_pb2.CancelJobResponse:
        job = await self._owned_job(request.name)
        result = await self._backends.jobs.cancel(job.id, CANCELLED_BY_OWNER)
        if result is None:
            raise _job_not_found(request.name)
        cancelled, event = result
        if event is None:
            raise FailedPrecondition(
                f"job {request.name} already finished {cancelled.state.value}",
                reason=Reason.JOB_FINISHED,
            )
        # Workers running the job learn of the cancel from the bus and stop the attempt.
        await self._announce(event)
        await self._settle_cancelled(cancelled)
        return job_service_pb2.CancelJobResponse(job=await self._render.job(cancelled))

    @stream_errors
    async def WatchJob(
        self, request: job_service_pb2.WatchJobRequest, context: Context
    ) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        job_id = _job_id(request.name)
        owner = current_principal().owner
        async for response in self._watcher.watch(job_id, owner, request.after_sequence):
            yield response

    @stream_errors
    async def RunJob(
        self, request: job_service_pb2.CreateJobRequest, context: Context
    ) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        principal = current_principal()
        new_job = await self._new_job(principal.owner, request)
        created = self._watcher.watch_new(
            new_job.id, principal.owner, lambda: self._create(principal, new_job)
        )
        async for response in created:
            yield response

    @unary_errors
    async def ListModels(
        self, request: job_service_pb2.ListModelsRequest, context: Context
    ) -> job_service_pb2.ListModelsResponse:
        models = list(self._backends.catalog)
        size = listing.page_size(request.page_size, default=len(models))
        offset = listing.decode_offset_token(request.page_token, len(models))
        end = offset + size
        return job_service_pb2.ListModelsResponse(
            models=[model_to_proto(spec) for spec in models[offset:end]],
            next_page_token=listing.encode_offset_token(end) if end < len(models) else "",
        )

    @unary_errors
    async def CreateUpload(
        self, request: job_service_pb2.CreateUploadRequest, context: Context
    ) -> job_service_pb2.CreateUploadResponse:
        return await self._uploads.create(current_principal().owner, request)

    async def wait_for_submissions(self, grace: float) -> None:
        """Lets recorded jobs finish being queued before the backends close."""
        if not self._submissions:
            return
        _, pending = await asyncio.wait(set(self._submissions), timeout=grace)
        if pending:
            log.error("%d job submissions did not finish while stopping", len(pending))

    async def _create(self, principal: Principal, new_job: NewJob) -> Job:
        """Records and queues `new_job` (see _submit). Shielded: once held, the job is recorded
        (or its hold released) and once recorded it is queued, even if the caller goes away or
        the server stops."""
        submission = asyncio.create_task(self._submit(principal, new_job))
        self._submissions.add(submission)
        submission.add_done_callback(self._submissions.discard)
        return await asyncio.shield(submission)

    async def _new_job(self, owner: str, request: job_service_pb2.CreateJobRequest) -> NewJob:
        if self._draining.is_set():
            raise Unavailable("the server is shutting down; retry on another replica")
        if not request.HasField("job"):
            raise InvalidArgument("job", "job is required")
        if not request.job.model:
            raise InvalidArgument("job.model", "job.model is required; ListModels lists them")
        if len(request.request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidArgument(
                "request_id", f"request_id is longer than {MAX_REQUEST_ID_LENGTH} characters"
            )
        spec = self._backends.catalog.get(request.job.model)
        job_input = job_input_from_proto(request.job.input)
        spec.validate(job_input)
        files = tuple(
            [await self._input_file(owner, i, ref.key) for i, ref in enumerate(job_input.files)]
        )
        for index, ref in enumerate(files):
            spec.validate_file(index, ref)
        return NewJob(
            id=new_job_id(),
            owner=owner,
            model=spec.id,
            input=replace(job_input, files=files),
            create_time=datetime.now(UTC),
            request_id=request.request_id or None,
        )

    async def _input_file(self, owner: str, index: int, key: str) -> BlobRef:
        """The stored blob an input file names; it must be one of the caller's."""
        field = f"job.input.files[{index}]"
        if not key.startswith(tenant_prefix(owner)):
            raise _blob_not_found(field, f"{field}: {key!r} is not one of your blobs")
        try:
            ref = await self._backends.blobs.stat(key)
        except ValueError as error:
            raise _blob_not_found(field, f"{field}: {error}") from None
        if ref is None:
            raise _blob_not_found(field, f"{field}: no blob {key!r}")
        return ref

    async def _submit(self, principal: Principal, new_job: NewJob) -> Job:
        """Holds the job's price, records the job, then queues it: the store is the truth, the
        broker only carries it.

        A hold this call placed is released when no job is recorded with it: the record failed,
        or the request_id named a job recorded without this hold. A job recorded but not yet
        queued keeps its hold: the outbox queues it."""
        new_job, new_hold = await self._holds.place(principal, new_job)
        try:
            job, created = await self._backends.jobs.create(new_job)
        except Exception:
            if new_hold:
                await self._holds.release_unless_recorded(new_job.id)
            raise
        if not created:
            if new_hold:
                await self._holds.release(new_job.id)
            return job
        try:
            await self._publish(JobMessage(job_id=job.id, model=job.model))
            self._outbox.published(job.id)
        except Exception:
            log.exception("job %s is recorded but could not be queued", job.id)
            raise Unavailable(
                f"job {job.name} was recorded but could not be queued; it is queued as soon as "
                "the broker takes it again: retry with the same request_id to get it",
                reason=Reason.QUEUE_UNAVAILABLE,
            ) from None
        # No event to announce: a RunJob stream starts with the job itself, and nobody else can
        # be watching a job that did not exist a moment ago.
        return job

    async def _publish(self, message: JobMessage) -> None:
        """Publishes, riding over a broker connection that is coming back (a reconnect takes
        about a second) before the caller is told to retry."""
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                await self._backends.broker.publish(message)
                return
            except Exception:
                if attempt == PUBLISH_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(PUBLISH_BACKOFF_SECONDS * 2**attempt)

    async def _settle_cancelled(self, job: Job) -> None:
        """Settles a cancelled job's hold: nothing is charged before it started, the tariff's
        per-job price after. Best effort: the reconciler settles what this could not."""
        try:
            await settle_ended(self._backends.accounts, job)
        except Exception:
            log.warning("job %s: could not settle the cancel; the reconciler will", job.id)

    async def _announce(self, event: JobEvent) -> None:
        """Tells watchers and workers; best effort, since they fill gaps from the store."""
        try:
            await self._backends.events.publish(event)
        except Exception:
            log.exception("could not publish event %d of job %s", event.sequence, event.job_id)

    async def _owned_job(self, name: str) -> Job:
        """The caller's job named `name`. Another caller's job is reported exactly like a
        missing one, so names reveal nothing."""
        job = await self._backends.jobs.get(_job_id(name))
        if job is None or job.owner != current_principal().owner:
            raise _job_not_found(name)
        return job


def _job_id(name: str) -> str:
    job_id = parse_job_name(name)
    if job_id is None:
        raise InvalidArgument("name", f"name must look like jobs/{{job}}, not {name!r}")
    return job_id


def _job_not_found(name: str) -> NotFound:
    return NotFound(f"no job {name}", reason=Reason.JOB_NOT_FOUND)


def _blob_not_found(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(field, message, reason=Reason.BLOB_NOT_FOUND)
