"""Helpers for the server tests: reading rich statuses, creating jobs, and doing a worker's part
through the real ports (the tests need no worker process)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from jobgate.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

from core.backends import Backends
from core.jobs import Job, JobEvent, JobState, LogLine, Output, Progress

Metadata = Sequence[tuple[str, str]]
Stub = job_service_pb2_grpc.JobServiceStub
WatchResponse = job_service_pb2.WatchJobResponse


@dataclass(frozen=True)
class RichError:
    """What a failed call said, decoded from its `grpc-status-details-bin` trailer."""

    code: grpc.StatusCode
    message: str
    status: status_pb2.Status
    info: error_details_pb2.ErrorInfo
    bad_fields: tuple[str, ...]


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert details is not None, f"no rich status in {error!r}"
    status = status_pb2.Status.FromString(details)
    assert status.code == error.code().value[0] and status.message == error.details()
    infos, fields = [], []
    for detail in status.details:
        info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            infos.append(info)
        elif detail.Unpack(bad_request):
            fields += [v.field for v in bad_request.field_violations]
    assert len(infos) == 1 and infos[0].domain == "jobgate.dev", status
    return RichError(error.code(), error.details() or "", status, infos[0], tuple(fields))


def job_request(
    model: str = "local/echo",
    *,
    prompt: str = "",
    seconds: float | None = None,
    files: Sequence[str] = (),
    request_id: str = "",
) -> job_service_pb2.CreateJobRequest:
    job_input = job_pb2.JobInput(prompt=prompt, files=[job_pb2.BlobRef(key=k) for k in files])
    if seconds is not None:
        job_input.duration.CopyFrom(duration_pb2.Duration(seconds=int(seconds)))
    return job_service_pb2.CreateJobRequest(
        job=job_pb2.Job(model=model, input=job_input), request_id=request_id
    )


async def create(
    stub: Stub, auth: Metadata, request: job_service_pb2.CreateJobRequest | None = None
) -> str:
    """Creates a job (an echo by default); returns its name."""
    request = request or job_request(prompt="hello")
    response = await stub.CreateJob(request, metadata=auth, timeout=5)
    return response.job.name


async def watch(stub: Stub, auth: Metadata, name: str, after: int = 0) -> list[WatchResponse]:
    """Every message of one WatchJob stream, until the server ends it (within 10 s)."""
    request = job_service_pb2.WatchJobRequest(name=name, after_sequence=after)
    return [m async for m in stub.WatchJob(request, metadata=auth, timeout=10)]


def kinds(messages: Sequence[WatchResponse]) -> list[str]:
    return [m.WhichOneof("update") for m in messages]


def sequences(messages: Sequence[WatchResponse]) -> list[int]:
    return [m.event.sequence for m in messages if m.WhichOneof("update") == "event"]


def job_id(name: str) -> str:
    return name.removeprefix("jobs/")


class ActingWorker:
    """Does what a worker does to a job, through the real JobStore and EventBus ports."""

    def __init__(self, backends: Backends) -> None:
        self._jobs = backends.jobs
        self._events = backends.events

    async def start(self, name: str, *, publish: bool = True) -> Job:
        claimed = await self._jobs.claim(job_id(name))
        assert claimed is not None, f"{name} could not be claimed"
        job, event = claimed
        await self._publish(event, publish)
        return job

    async def progress(
        self, name: str, attempt: int, fraction: float, *, publish: bool = True
    ) -> JobEvent:
        return await self._record(name, attempt, Progress(fraction, f"{fraction:.0%}"), publish)

    async def log(self, name: str, attempt: int, line: str, *, publish: bool = True) -> JobEvent:
        return await self._record(name, attempt, LogLine(line), publish)

    async def output(self, name: str, attempt: int, output: Output) -> JobEvent:
        return await self._record(name, attempt, output, True)

    async def succeed(self, name: str, attempt: int, *, publish: bool = True) -> JobEvent:
        event = await self._jobs.finish(job_id(name), attempt, JobState.SUCCEEDED)
        assert event is not None, f"{name} could not finish"
        await self._publish(event, publish)
        return event

    async def _record(
        self, name: str, attempt: int, payload: Progress | LogLine | Output, publish: bool
    ) -> JobEvent:
        event = await self._jobs.record(job_id(name), attempt, payload)
        assert event is not None, f"{name} is not running attempt {attempt}"
        await self._publish(event, publish)
        return event

    async def _publish(self, event: JobEvent, publish: bool) -> None:
        # Not publishing is how a test loses a bus event.
        if publish:
            await self._events.publish(event)


# Covers any job the tests submit at catalog prices, so they take the paid path: hold, settle.
TEST_FUNDS_MICROS = 10**12


async def funded_key(backends: Backends, owner: str) -> str:
    """A new `jobs` key of `owner`, whose balance covers whatever a test runs."""
    key = await backends.accounts.create_key(owner)
    await backends.accounts.top_up(owner, TEST_FUNDS_MICROS, reference=f"tests:{owner}")
    return key
