"""Builds JobService requests from plain Python arguments and reads their answers; both clients
share these."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from google.protobuf import duration_pb2

from jobgate.client._errors import JobFailedError
from jobgate.v1 import job_pb2, job_service_pb2

JOB_COLLECTION = "jobs/"
TERMINAL_STATES = frozenset(
    {job_pb2.Job.STATE_SUCCEEDED, job_pb2.Job.STATE_FAILED, job_pb2.Job.STATE_CANCELLED}
)
FAILED_STATES = frozenset({job_pb2.Job.STATE_FAILED, job_pb2.Job.STATE_CANCELLED})
STATE_NAMES = tuple(
    name.removeprefix("STATE_")
    for name in job_pb2.Job.State.DESCRIPTOR.values_by_name
    if name != "STATE_UNSPECIFIED"
)


@dataclass(frozen=True)
class JobSpec:
    """What `submit()` was asked to run: a model and its input."""

    model: str
    prompt: str | None = None
    negative_prompt: str | None = None
    files: Iterable[job_pb2.BlobRef | str] = ()
    size: str | None = None
    aspect_ratio: str | None = None
    duration: float | timedelta | None = None
    seed: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def job_name(name_or_id: str) -> str:
    """`jobs/abc` for either `jobs/abc` or `abc`."""
    if not name_or_id or name_or_id == JOB_COLLECTION:
        raise ValueError("a job name or id is required, e.g. jobs/abc or abc")
    if name_or_id.startswith(JOB_COLLECTION):
        return name_or_id
    return JOB_COLLECTION + name_or_id


def create_job(spec: JobSpec, request_id: str | None) -> job_service_pb2.CreateJobRequest:
    """The CreateJob request; a missing request_id becomes a fresh UUID so that retrying the
    very same request can never create a second job."""
    if not spec.model:
        raise ValueError("a model is required, e.g. local/echo")
    return job_service_pb2.CreateJobRequest(
        job=job_pb2.Job(model=spec.model, input=job_input(spec)),
        request_id=request_id if request_id is not None else str(uuid.uuid4()),
    )


def job_input(spec: JobSpec) -> job_pb2.JobInput:
    job_input = job_pb2.JobInput(
        prompt=spec.prompt or "",
        negative_prompt=spec.negative_prompt or "",
        files=[_blob_ref(file) for file in spec.files],
        size=spec.size or "",
        aspect_ratio=spec.aspect_ratio or "",
    )
    if spec.duration is not None:
        job_input.duration.CopyFrom(_duration(spec.duration))
    if spec.seed is not None:
        job_input.seed = spec.seed
    if spec.options:
        job_input.options.update(spec.options)
    return job_input


def list_jobs(
    state: job_pb2.Job.State | str | None,
    model: str | None,
    page_size: int,
    page_token: str,
) -> job_service_pb2.ListJobsRequest:
    if page_size <= 0:
        raise ValueError(f"page_size must be positive, not {page_size}")
    return job_service_pb2.ListJobsRequest(
        page_size=page_size, page_token=page_token, filter=jobs_filter(state, model)
    )


def jobs_filter(state: job_pb2.Job.State | str | None, model: str | None) -> str:
    """The ListJobs filter, e.g. `state = RUNNING AND model = "local/echo"`."""
    terms = []
    if state is not None:
        terms.append(f"state = {state_name(state)}")
    if model:
        terms.append(f"model = {json.dumps(model)}")
    return " AND ".join(terms)


def state_name(state: job_pb2.Job.State | str) -> str:
    """`RUNNING` for Job.STATE_RUNNING, "running" or "STATE_RUNNING"; ValueError otherwise."""
    if isinstance(state, str):
        name = state.strip().upper().removeprefix("STATE_")
        if name not in STATE_NAMES:
            raise ValueError(f"unknown job state {state!r}: use one of {', '.join(STATE_NAMES)}")
        return name
    return job_pb2.Job.State.Name(state).removeprefix("STATE_")


def _blob_ref(file: job_pb2.BlobRef | str) -> job_pb2.BlobRef:
    return job_pb2.BlobRef(key=file) if isinstance(file, str) else file


def _duration(value: float | timedelta) -> duration_pb2.Duration:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"duration must not be negative, not {seconds} s")
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def final_job(job: job_pb2.Job) -> job_pb2.Job:
    """`job` if it succeeded; JobFailedError if it ended FAILED or CANCELLED."""
    if job.state in FAILED_STATES:
        raise JobFailedError(job)
    return job
