"""Billing's rules: tariffs, what a job may cost, what its end captures. No transport, no database.

Money is integer micros (millionths of the currency unit) throughout: no float ever holds money.

A job that may cost something is paid for in two steps. CreateJob places a *hold* of the job's
maximum price (its model's price on the caller's tariff, with the model's `max_units`); the job's
end *settles* the hold: it captures what the job cost (never more than the hold) and releases the
rest. The terms of the hold (the price it was placed at) are kept with it, so a tariff changed
while a job runs does not change what that job costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from core.catalog import ModelSpec, Price, PriceUnit
from core.errors import FailedPrecondition, Reason, ResourceExhausted
from core.jobs import Job, JobState

THOUSAND = 1000


class Scope(StrEnum):
    """What an API key may do: `jobs` runs jobs and reads the caller's own balance and usage,
    `admin` manages users, keys, tariffs and balances."""

    JOBS = "jobs"
    ADMIN = "admin"


def unit_cost(price: Price, units: int) -> int:
    """What `units` price units cost at `price`, in micros; tokens are priced per thousand and
    rounded up, so a fraction of a thousand is never free."""
    if units < 0:
        raise ValueError(f"units must not be negative, not {units}")
    if price.unit is PriceUnit.NONE:
        return 0
    if price.unit is PriceUnit.THOUSAND_TOKENS:
        return -(-price.per_unit_micros * units // THOUSAND)
    return price.per_unit_micros * units


def job_cost(price: Price, units: int) -> int:
    """A job's price at `price` for `units` units: the per-job part plus the units'."""
    return price.per_job_micros + unit_cost(price, units)


@dataclass(frozen=True)
class Tariff:
    """A named set of terms: model prices that override the catalog's, and limits (0: none)."""

    name: str
    prices: Mapping[str, Price] = field(default_factory=dict)
    max_concurrent_jobs: int = 0
    submits_per_minute: int = 0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a tariff needs a name")
        if self.max_concurrent_jobs < 0 or self.submits_per_minute < 0:
            raise ValueError("tariff limits must not be negative (0 means no limit)")
        for model, price in self.prices.items():
            if price.per_job_micros < 0 or price.per_unit_micros < 0:
                raise ValueError(f"the price of {model} must not be negative")

    @property
    def limited(self) -> bool:
        """Whether submissions count against a limit, so even a free job needs a hold."""
        return self.max_concurrent_jobs > 0 or self.submits_per_minute > 0

    def price_of(self, spec: ModelSpec) -> Price:
        """The model's price on this tariff: its own, else the catalog's."""
        return self.prices.get(spec.id, spec.price)

    def terms_for(self, spec: ModelSpec) -> HoldTerms:
        price = self.price_of(spec)
        return HoldTerms(
            model=spec.id,
            per_job_micros=price.per_job_micros,
            per_unit_micros=price.per_unit_micros,
            unit=price.unit,
            max_units=spec.max_units,
        )


# A user without a tariff of their own: catalog prices, no limits.
DEFAULT_TARIFF = Tariff("default")


@dataclass(frozen=True)
class HoldTerms:
    """The price a job's hold was placed at, kept with the hold until it is settled."""

    model: str
    per_job_micros: int
    per_unit_micros: int
    unit: PriceUnit
    max_units: int

    @property
    def price(self) -> Price:
        return Price(self.per_job_micros, self.per_unit_micros, self.unit)

    @property
    def hold_micros(self) -> int:
        """The job's maximum price: what is held while it is queued or running."""
        return job_cost(self.price, self.max_units)

    def capture_micros(self, ending: Ending, units: int) -> int:
        """What the job's end costs, never more than the hold:
        - succeeded: the per-job price and the units used, at most `max_units`;
        - cancelled after it started: the per-job price (the provider was already paid to start);
        - failed, cancelled before it started, or never recorded: nothing."""
        if ending is Ending.SUCCEEDED:
            return job_cost(self.price, min(units, self.max_units))
        if ending is Ending.CANCELLED_RUNNING:
            return self.per_job_micros
        return 0


class Ending(StrEnum):
    """How a held job ended, as settlement sees it."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED_QUEUED = "CANCELLED_QUEUED"
    CANCELLED_RUNNING = "CANCELLED_RUNNING"
    # The hold was placed but the job was never recorded (its CreateJob failed).
    NOT_RECORDED = "NOT_RECORDED"


def ending_of(job: Job) -> Ending | None:
    """The ending a terminal job settles with; None while it is unfinished."""
    if job.state is JobState.SUCCEEDED:
        return Ending.SUCCEEDED
    if job.state is JobState.FAILED:
        return Ending.FAILED
    if job.state is JobState.CANCELLED:
        return Ending.CANCELLED_RUNNING if job.start_time is not None else Ending.CANCELLED_QUEUED
    return None


@dataclass(frozen=True)
class Settlement:
    """What settling one hold did: captured + released == the hold."""

    job_id: str
    owner: str
    captured_micros: int
    released_micros: int


@dataclass(frozen=True)
class Balance:
    """An account's money: `available` may be held by new jobs, `held` is promised to jobs not
    yet settled. Both never go below zero."""

    owner: str
    available_micros: int
    held_micros: int


@dataclass(frozen=True)
class Usage:
    """What one owner's settled jobs of one model cost on one (UTC) day."""

    day: date
    model: str
    jobs: int
    units: int
    cost_micros: int


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as it may be shown: its public id, never its secret."""

    key_id: str
    owner: str
    scopes: frozenset[Scope]
    revoked: bool
    # When it last authenticated, to LAST_USED_RESOLUTION; None if never.
    last_used_time: datetime | None = None


@dataclass(frozen=True)
class HoldRequest:
    """CreateJob's ask: hold `terms.hold_micros` of `owner`'s balance for job `job_id`, within
    `tariff`'s limits. With a `request_id` already held for, nothing new is held."""

    owner: str
    job_id: str
    request_id: str | None
    terms: HoldTerms
    tariff: Tariff


def insufficient_balance(needed_micros: int, available_micros: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"the balance does not cover this job: its maximum price is {needed_micros} micros and"
        f" {available_micros} are available; top up, or wait for running jobs to settle",
        reason=Reason.INSUFFICIENT_BALANCE,
    )


def concurrency_exceeded(limit: int, retry_after: float) -> ResourceExhausted:
    return ResourceExhausted(
        f"the tariff allows {limit} unfinished jobs at once; retry once one has ended",
        retry_after=retry_after,
        reason=Reason.CONCURRENCY_LIMIT,
    )


def rate_exceeded(limit: int, retry_after: float) -> ResourceExhausted:
    return ResourceExhausted(
        f"the tariff allows {limit} submissions a minute; retry in {retry_after:.0f} s",
        retry_after=retry_after,
        reason=Reason.RATE_LIMIT,
    )
