"""The ports: what jobgate needs from the outside world, as small protocols.

Each is written for the semantics of its production backend, so the embedded adapters behave
the same way: the broker delivers at least once and a delivery is acked only after its outcome is
recorded; every job state change is a conditional update fenced by the attempt number; events are
numbered per job and replayable; blobs travel by reference.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import NamedTuple, Protocol

from core.billing import (
    DEFAULT_TARIFF,
    ApiKeyInfo,
    Balance,
    Ending,
    HoldRequest,
    Scope,
    Settlement,
    Tariff,
    Usage,
)
from core.jobs import (
    BlobRef,
    Job,
    JobError,
    JobEvent,
    JobState,
    LogLine,
    NewJob,
    Output,
    Progress,
    ProviderTask,
)


@dataclass(frozen=True)
class JobQuery:
    """One page of an owner's jobs, newest first (create_time, then id, both descending)."""

    owner: str
    limit: int
    state: JobState | None = None
    model: str | None = None
    before: tuple[datetime, str] | None = None  # keyset cursor: (create_time, id) of the last seen


class Claimed(NamedTuple):
    """A claim that started the next attempt: the job as it now runs, and its RUNNING event."""

    job: Job
    event: JobEvent


@dataclass(frozen=True)
class Held:
    """A claim refused because a running attempt holds the job's lease until `until`."""

    job: Job
    until: datetime


class JobStore(Protocol):
    async def create(self, job: NewJob) -> tuple[Job, bool]:
        """Records a QUEUED job, not yet published, and its first event; returns (job, created).

        With a request_id already used by the same owner, returns (the existing job, False) and
        records nothing. Safe under concurrent duplicates: exactly one call creates.
        """

    async def get(self, job_id: str) -> Job | None: ...

    async def list(self, query: JobQuery) -> list[Job]: ...

    async def jobs_ahead(self, job: Job) -> int:
        """How many QUEUED jobs of the same model were created before `job`."""

    async def claim(self, job_id: str, lease: timedelta = timedelta(0)) -> Claimed | Held | None:
        """Starts the next attempt of a QUEUED job, or of a RUNNING one whose lease has run out:
        RUNNING with attempt + 1, progress and outputs cleared, leased until now + `lease`.

        Held (nothing written) while the running attempt's lease is live; None when the job is
        missing or terminal. A lease of 0 runs out at once: every claim starts the next attempt.
        One conditional write; telling Held from None reads the job only when that write fails.
        """

    async def heartbeat(self, job_id: str, attempt: int, lease: timedelta) -> bool:
        """Extends the lease to now + `lease` if the job is RUNNING at exactly `attempt`; False
        when it is not (the attempt lost the job). One write, no event."""

    async def record(
        self, job_id: str, attempt: int, payload: Progress | LogLine | Output
    ) -> JobEvent | None:
        """Appends an event of a running attempt; None (nothing written) unless the job is
        RUNNING at exactly `attempt`. Progress and Output also update the job."""

    async def set_provider_task(self, job_id: str, attempt: int, task: ProviderTask) -> bool:
        """Records the provider task the running attempt submitted, if the job is RUNNING at
        exactly `attempt`; False (nothing written) when it is not. One write, no event. The task
        stays on the job through every later claim, so the next attempt resumes it."""

    async def finish(
        self,
        job_id: str,
        attempt: int,
        state: JobState,
        error: JobError | None = None,
        usage_units: int = 0,
    ) -> JobEvent | None:
        """Moves a RUNNING job at exactly `attempt` to a terminal `state`, its lease cleared,
        keeping the attempt's `usage_units` for billing; None if it was not."""

    async def cancel(self, job_id: str, error: JobError) -> tuple[Job, JobEvent | None] | None:
        """Moves a QUEUED or RUNNING job to CANCELLED, its lease cleared. None if the job is
        missing; with a terminal job, returns it unchanged and no event."""

    async def events(self, job_id: str, after: int, limit: int = 1000) -> list[JobEvent]:
        """The job's events with sequence > after, in order."""

    async def unfinished(self, limit: int = 1000) -> list[Job]:
        """QUEUED and RUNNING jobs, oldest first: what a restart must make sure is queued."""

    async def mark_published(self, job_ids: Sequence[str]) -> None:
        """Notes that the broker holds a message for each job (the outbox): one write for all.
        A job that started or was cancelled has left the outbox and needs no write, and most
        jobs start before the note is written: stores skip them. Unknown ids are ignored."""

    async def unpublished(self, older_than: datetime, limit: int) -> list[Job]:
        """QUEUED jobs created before `older_than` that were never marked published, oldest
        first: what the outbox sweep must publish. A job claimed or cancelled needs no message."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Principal:
    """Who a verified API key belongs to, what it may do, and on which terms its owner pays."""

    owner: str
    key_id: str
    scopes: frozenset[Scope] = frozenset({Scope.JOBS})
    tariff: Tariff = DEFAULT_TARIFF


@dataclass(frozen=True)
class OpenHold:
    """A hold not yet settled: what the reconciler looks at."""

    job_id: str
    owner: str
    create_time: datetime


class AccountStore(Protocol):
    """Users, their API keys and tariffs, and their money as an append-only ledger.

    Every change of money is one transaction that appends ledger entries and keeps each user's
    balance row in step, so the balance always equals the sum of the ledger and never goes below
    zero, however many holds race. Entries are unique per (kind, reference): a job's hold,
    capture and release can each be written once only, which makes settlement idempotent.
    """

    async def authenticate(self, api_key: str) -> Principal | None:
        """The key's principal (scopes, its owner's tariff), or None for an unknown or revoked
        key. Constant-time compare. Notes the key's last use, at most once a minute."""

    async def create_key(self, owner: str, scopes: Collection[Scope] = (Scope.JOBS,)) -> str:
        """Issues a new key for `owner`, creating the user if need be; the only time the full
        key is seen."""

    async def revoke_key(self, key_id: str) -> ApiKeyInfo | None:
        """Revokes the key for good; None if there is no such key."""

    async def list_keys(self, owner: str) -> list[ApiKeyInfo]: ...

    async def create_user(self, owner: str, tariff: str | None = None) -> bool:
        """Creates the user, with `tariff` (None: the default tariff); False if it existed.
        NotFound (TARIFF_NOT_FOUND) for an unknown tariff."""

    async def put_tariff(self, tariff: Tariff) -> None:
        """Creates or replaces the tariff of that name; users on it get the new terms."""

    async def get_tariff(self, name: str) -> Tariff | None: ...

    async def assign_tariff(self, owner: str, tariff: str | None) -> None:
        """Puts the user on `tariff` (None: the default). NotFound for an unknown user or
        tariff."""

    async def top_up(self, owner: str, amount_micros: int, reference: str) -> Balance:
        """Adds money; a `reference` used before adds nothing again. NotFound for an unknown
        user, ValueError for an amount that is not positive."""

    async def balance(self, owner: str) -> Balance | None: ...

    async def hold(self, request: HoldRequest) -> str:
        """Holds the job's maximum price, in one transaction that also checks the tariff's
        limits; returns the job id held for, which is an earlier job's id when the request_id
        was held for before (nothing is then held again).

        FailedPrecondition (INSUFFICIENT_BALANCE) when the balance does not cover it;
        ResourceExhausted (CONCURRENCY_LIMIT, RATE_LIMIT) over a limit."""

    async def settle(self, job_id: str, ending: Ending, units: int = 0) -> Settlement | None:
        """Captures what the job's end costs and releases the rest of its hold; None (nothing
        written) when the job has no open hold: never held, or settled already.

        Ending NOT_RECORDED also frees the hold's request_id: a retry of that request then
        holds anew for a new job instead of finding this released hold."""

    async def refund(self, job_id: str) -> int | None:
        """Gives back what the job's settlement captured; the amount refunded, or None when the
        job was never captured or was refunded already."""

    async def open_holds(
        self, older_than: datetime, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[OpenHold]:
        """Holds placed before `older_than` and not settled, oldest first (by create_time, then
        job_id); with `after`, only those past that (create_time, job_id): the next page."""

    async def expire_rate_counters(self, before: datetime) -> None:
        """Deletes the submit-rate counters of minutes that ended before `before`."""

    async def usage(self, owner: str, since: date, limit: int) -> list[Usage]:
        """The owner's settled jobs per UTC day and model from `since` on, newest day first."""

    async def ledger_totals(self, owner: str) -> dict[str, int]:
        """The sum of the owner's ledger entries of each kind (TOP_UP, HOLD, CAPTURE, RELEASE,
        REFUND): for audits, which check the balance row against them."""

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
    async def publish(self, message: JobMessage, *, delay: float = 0.0) -> None:
        """Returns once the broker holds the message durably; raises if it could not.

        With `delay` (seconds), consumers get the message no sooner than that: how a job is
        retried with backoff. Brokers may round the delay up."""

    def consume(
        self, models: Collection[str] | None, prefetch: int
    ) -> AbstractAsyncContextManager[AsyncIterator[Delivery]]:
        """Deliveries for `models` (all when None), at most `prefetch` unacked at a time.

        Deliveries not acked when the consumer closes go back to the queue, redelivered."""

    async def close(self) -> None: ...


class Subscription(Protocol):
    """One job's live events. Waiting for the next one may be cancelled (a timeout) without
    losing any; close() ends the iteration once what arrived before it is taken."""

    def __aiter__(self) -> AsyncIterator[JobEvent]: ...

    async def __anext__(self) -> JobEvent: ...

    def close(self) -> None: ...


class EventBus(Protocol):
    """Carries job events live from whoever records them to every server feeding watchers."""

    async def publish(self, event: JobEvent) -> None: ...

    def subscribe(self, job_id: str) -> AbstractAsyncContextManager[Subscription]:
        """Events of one job published from now on. Best effort: watchers fill gaps from the
        job store, which stays the source of truth."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class UploadTarget:
    """One HTTP request that stores a blob without credentials: send the bytes to `url` with
    `method` and exactly `headers`, before `expires`."""

    url: str
    method: str
    headers: Mapping[str, str]
    expires: datetime


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> BlobRef: ...

    async def get(self, key: str) -> bytes:
        """Raises KeyError for a missing blob."""

    async def stat(self, key: str) -> BlobRef | None: ...

    async def download_url(self, key: str, ttl: timedelta) -> str:
        """A URL that GETs the blob without credentials until `ttl` passes."""

    async def upload_url(
        self, key: str, content_type: str, size_bytes: int, ttl: timedelta
    ) -> UploadTarget:
        """A request that stores exactly `size_bytes` bytes of `content_type` at `key` until
        `ttl` passes, refused with any other length or type. It never replaces a blob already
        at `key`. ValueError for an unsafe key or a negative size."""

    async def close(self) -> None: ...
