"""The ports: what jobgate needs from the outside world, as small protocols.

Each is written for the semantics of its production backend, so the embedded adapters behave
the same way: the broker delivers at least once and a delivery is acked only after its outcome is
recorded; every job state change is a conditional update fenced by the attempt number; events are
numbered per job and replayable; blobs travel by reference.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from core.jobs import BlobRef, Job, JobError, JobEvent, JobState, LogLine, NewJob, Output, Progress


@dataclass(frozen=True)
class JobQuery:
    """One page of an owner's jobs, newest first (create_time, then id, both descending)."""

    owner: str
    limit: int
    state: JobState | None = None
    model: str | None = None
    before: tuple[datetime, str] | None = None  # keyset cursor: (create_time, id) of the last seen


class JobStore(Protocol):
    async def create(self, job: NewJob) -> tuple[Job, bool]:
        """Records a QUEUED job and its first event; returns (job, created).

        With a request_id already used by the same owner, returns (the existing job, False) and
        records nothing. Safe under concurrent duplicates: exactly one call creates.
        """

    async def get(self, job_id: str) -> Job | None: ...

    async def list(self, query: JobQuery) -> list[Job]: ...

    async def jobs_ahead(self, job: Job) -> int:
        """How many QUEUED jobs of the same model were created before `job`."""

    async def claim(self, job_id: str) -> tuple[Job, JobEvent] | None:
        """Starts the next attempt: QUEUED or RUNNING -> RUNNING with attempt + 1, progress and
        outputs cleared. None when the job is missing or already terminal."""

    async def record(
        self, job_id: str, attempt: int, payload: Progress | LogLine | Output
    ) -> JobEvent | None:
        """Appends an event of a running attempt; None (nothing written) unless the job is
        RUNNING at exactly `attempt`. Progress and Output also update the job."""

    async def finish(
        self, job_id: str, attempt: int, state: JobState, error: JobError | None = None
    ) -> JobEvent | None:
        """Moves a RUNNING job at exactly `attempt` to a terminal `state`; None if it was not."""

    async def cancel(self, job_id: str, error: JobError) -> tuple[Job, JobEvent | None] | None:
        """Moves a QUEUED or RUNNING job to CANCELLED. None if the job is missing; with a
        terminal job, returns it unchanged and no event."""

    async def events(self, job_id: str, after: int, limit: int = 1000) -> list[JobEvent]:
        """The job's events with sequence > after, in order."""

    async def unfinished(self, limit: int = 1000) -> list[Job]:
        """QUEUED and RUNNING jobs, oldest first: what a restart must make sure is queued."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Principal:
    """Who a verified API key belongs to."""

    owner: str
    key_id: str


class AccountStore(Protocol):
    async def authenticate(self, api_key: str) -> Principal | None:
        """The key's principal, or None for an unknown or revoked key. Constant-time compare."""

    async def create_key(self, owner: str) -> str:
        """Issues a new key for `owner`; the only time the full key is seen."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class JobMessage:
    """What the broker carries: a reference to a recorded job, never its input."""

    job_id: str
    model: str


class Delivery(Protocol):
    message: JobMessage
    redelivered: bool

    async def ack(self) -> None: ...

    async def reject(self, *, requeue: bool) -> None: ...


class Broker(Protocol):
    async def publish(self, message: JobMessage) -> None:
        """Returns once the broker holds the message durably; raises if it could not."""

    def consume(
        self, models: Collection[str] | None, prefetch: int
    ) -> AbstractAsyncContextManager[AsyncIterator[Delivery]]:
        """Deliveries for `models` (all when None), at most `prefetch` unacked at a time.

        Deliveries not acked when the consumer closes go back to the queue, redelivered."""

    async def close(self) -> None: ...


class EventBus(Protocol):
    """Carries job events live from whoever records them to every server feeding watchers."""

    async def publish(self, event: JobEvent) -> None: ...

    def subscribe(self, job_id: str) -> AbstractAsyncContextManager[AsyncIterator[JobEvent]]:
        """Events of one job published from now on. Best effort: watchers fill gaps from the
        job store, which stays the source of truth."""

    async def close(self) -> None: ...


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> BlobRef: ...

    async def get(self, key: str) -> bytes:
        """Raises KeyError for a missing blob."""

    async def stat(self, key: str) -> BlobRef | None: ...

    async def download_url(self, key: str, ttl: timedelta) -> str:
        """A URL that GETs the blob without credentials until `ttl` passes."""

    async def close(self) -> None: ...
