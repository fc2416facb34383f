"""Jobs, their events and the rules of their lifecycle. No transport, no database."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from core.errors import Reason


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

# RUNNING -> RUNNING is a new attempt after the previous one's worker vanished.
LEGAL_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def can_transition(source: JobState, target: JobState) -> bool:
    return target in LEGAL_TRANSITIONS[source]


def sources_of(target: JobState) -> frozenset[JobState]:
    """The states a job may be in to move to `target`: what a conditional update matches on."""
    return frozenset(s for s, targets in LEGAL_TRANSITIONS.items() if target in targets)


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


@dataclass(frozen=True)
class BlobRef:
    """A file in the blob store, by reference; its bytes never travel with a job."""

    key: str
    content_type: str = ""
    size_bytes: int = 0
    sha256: str = ""


@dataclass(frozen=True)
class JobInput:
    prompt: str = ""
    negative_prompt: str = ""
    files: tuple[BlobRef, ...] = ()
    size: str = ""
    aspect_ratio: str = ""
    duration_seconds: float | None = None
    seed: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def fields_set(self) -> list[str]:
        """The names of the fields that hold a value, as the catalog names them."""
        return [
            name
            for name, value in (
                ("prompt", self.prompt),
                ("negative_prompt", self.negative_prompt),
                ("files", self.files),
                ("size", self.size),
                ("aspect_ratio", self.aspect_ratio),
                ("duration", self.duration_seconds),
                ("seed", self.seed),
                ("options", self.options),
            )
            if value not in ("", (), None, {})
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobInput:
        files = tuple(BlobRef(**f) for f in data.get("files", ()))
        return cls(**{**data, "files": files})


@dataclass(frozen=True)
class Progress:
    fraction: float
    message: str = ""


@dataclass(frozen=True)
class LogLine:
    message: str
    level: LogLevel = LogLevel.INFO


@dataclass(frozen=True)
class Output:
    """One result: exactly one of `blob`, `text` or `json` is set."""

    label: str
    blob: BlobRef | None = None
    text: str | None = None
    json: Any = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Output:
        blob = data.get("blob")
        return cls(**{**data, "blob": BlobRef(**blob) if blob else None})


@dataclass(frozen=True)
class JobError:
    reason: Reason
    message: str


@dataclass(frozen=True)
class StateChanged:
    state: JobState
    error: JobError | None = None


EventPayload = StateChanged | Progress | LogLine | Output


@dataclass(frozen=True)
class JobEvent:
    """A recorded change of a job; `sequence` counts 1, 2, 3… per job without gaps."""

    job_id: str
    sequence: int
    time: datetime
    attempt: int
    payload: EventPayload

    @property
    def terminal(self) -> bool:
        return isinstance(self.payload, StateChanged) and self.payload.state.terminal


@dataclass(frozen=True)
class NewJob:
    """What CreateJob asks to record."""

    id: str
    owner: str
    model: str
    input: JobInput
    create_time: datetime
    request_id: str | None = None
    # An account hold was placed for the job: its outcome must be settled (see core.billing).
    billed: bool = False

    def fingerprint(self) -> str:
        """Identifies the request's content, so a reused request_id with other content is caught."""
        body = json.dumps([self.model, self.input.to_dict()], sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class ProviderTask:
    """A paid generation a provider runs on its side (submit, then poll), recorded on the job
    before it is polled: a later attempt resumes it instead of paying for a second one."""

    model: str  # the model it was submitted to: the job's own, or its fallback
    id: str  # the provider's task or prediction id


@dataclass(frozen=True)
class Job:
    id: str
    owner: str
    model: str
    input: JobInput
    state: JobState
    create_time: datetime
    attempt: int = 0
    progress: Progress | None = None
    outputs: tuple[Output, ...] = ()
    error: JobError | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    event_sequence: int = 0
    request_id: str | None = None
    # While RUNNING: until when the attempt holds the job; another claim waits that long.
    lease_expire_time: datetime | None = None
    # Kept across attempts (a claim clears progress and outputs, never this).
    provider_task: ProviderTask | None = None
    # An account hold was placed for the job, so its end must be settled (see core.billing).
    billed: bool = False
    # The price units the finishing attempt reported (RunContext.report_usage), kept with the
    # outcome so that a settlement lost in a crash can be made later from the job alone.
    usage_units: int = 0

    @property
    def name(self) -> str:
        return job_name(self.id)


def lease_end(now: datetime, lease: timedelta) -> datetime:
    """When a lease of `lease` taken at `now` runs out; a negative lease is a caller's bug."""
    if lease < timedelta(0):
        raise ValueError(f"a lease cannot be negative, got {lease}")
    return now + lease


JOB_NAME_PREFIX = "jobs/"


def job_name(job_id: str) -> str:
    return JOB_NAME_PREFIX + job_id


def job_id_from_name(name: str) -> str | None:
    """The id in `jobs/{id}`, or None when `name` is not a job name."""
    if not name.startswith(JOB_NAME_PREFIX):
        return None
    job_id = name[len(JOB_NAME_PREFIX) :]
    if not job_id or "/" in job_id or len(job_id) > 64:
        return None
    return job_id
