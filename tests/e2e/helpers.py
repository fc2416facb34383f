"""Helpers for end-to-end tests: they drive jobgate only through its public gRPC API."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from jobgate.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

Metadata = Sequence[tuple[str, str]]
TERMINAL = {job_pb2.Job.STATE_SUCCEEDED, job_pb2.Job.STATE_FAILED, job_pb2.Job.STATE_CANCELLED}


async def create(
    stub: job_service_pb2_grpc.JobServiceStub,
    auth: Metadata,
    model: str,
    *,
    prompt: str = "",
    seconds: float | None = None,
    request_id: str = "",
) -> job_pb2.Job:
    job_input = job_pb2.JobInput(prompt=prompt)
    if seconds is not None:
        job_input.duration.CopyFrom(
            duration_pb2.Duration(seconds=int(seconds), nanos=round(seconds % 1 * 1e9))
        )
    request = job_service_pb2.CreateJobRequest(
        job=job_pb2.Job(model=model, input=job_input), request_id=request_id
    )
    response = await stub.CreateJob(request, metadata=auth, timeout=10)
    return response.job


async def watch_all(
    stub: job_service_pb2_grpc.JobServiceStub,
    auth: Metadata,
    name: str,
    after: int = 0,
    deadline: float = 60,
) -> list[job_service_pb2.WatchJobResponse]:
    """Every message of one WatchJob stream, until the server ends it (or `deadline` s pass)."""
    request = job_service_pb2.WatchJobRequest(name=name, after_sequence=after)
    return [message async for message in stub.WatchJob(request, metadata=auth, timeout=deadline)]


def events_of(messages: Sequence[job_service_pb2.WatchJobResponse]) -> list[job_pb2.JobEvent]:
    return [m.event for m in messages if m.WhichOneof("update") == "event"]


def states_of(messages: Sequence[job_service_pb2.WatchJobResponse]) -> list[int]:
    """The states a stream showed, the snapshot's first: a fast job may be done before it."""
    snapshot = [m.job.state for m in messages if m.WhichOneof("update") == "job"]
    changes = [e.state_change.state for e in events_of(messages) if e.HasField("state_change")]
    return snapshot + changes


async def wait_for_state(
    stub: job_service_pb2_grpc.JobServiceStub, auth: Metadata, name: str, state: int
) -> job_pb2.Job:
    """Watches until the job reaches `state`; returns the job as GetJob then shows it."""
    request = job_service_pb2.WatchJobRequest(name=name)
    async for message in stub.WatchJob(request, metadata=auth, timeout=30):
        kind = message.WhichOneof("update")
        if (kind == "job" and message.job.state == state) or (
            kind == "event" and message.event.state_change.state == state
        ):
            break
    else:
        raise AssertionError(f"{name} ended without reaching state {state}")
    return (await stub.GetJob(job_service_pb2.GetJobRequest(name=name), metadata=auth)).job


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The google.rpc.ErrorInfo reason the server put in the call's rich status."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    raise AssertionError(f"no ErrorInfo in {error!r}")
