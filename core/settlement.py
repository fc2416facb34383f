"""Settling held jobs: right after their end (by whoever recorded it), and later by a reconciler
for any settlement that was lost.

Whoever records a billed job's end settles it at once: the worker after `finish`, the server
after a cancel. A crash (or an account store that is down) between the two loses that
settlement, never the outcome: the job store keeps the end and the attempt's usage units. The
Reconciler finds such jobs from the account side, since the job store (maybe MongoDB) and the
account store (PostgreSQL) can be different databases and nothing joins them: it pages through
holds left open longer than a grace period and looks each job up. A job that ended is settled
from what its record says; a job that was never recorded (its CreateJob failed between the hold
and the record) has its hold released. Settlement is idempotent in the ledger, so a reconciler
racing a late worker, or several servers' reconcilers racing each other, settle each job once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.billing import Ending, Settlement, ending_of
from core.jobs import Job
from core.ports import AccountStore, JobStore

log = logging.getLogger(__name__)

# Longer than any CreateJob takes between its hold and its record, so a hold whose job is not
# (yet) in the job store is not released under a CreateJob still running.
DEFAULT_GRACE = timedelta(minutes=2)
DEFAULT_INTERVAL_SECONDS = 30.0
PAGE_SIZE = 500
# Rate counters older than this are of no use: a counter only matters in its own minute.
RATE_COUNTER_KEEP = timedelta(minutes=2)


async def settle_ended(accounts: AccountStore, job: Job) -> Settlement | None:
    """Settles a billed job that has ended, from its record; None if there was nothing to do."""
    ending = ending_of(job)
    if not job.billed or ending is None:
        return None
    return await accounts.settle(job.id, ending, job.usage_units)


@dataclass(frozen=True)
class Pass:
    """What one reconciliation pass did."""

    settled: int = 0
    released: int = 0
    unfinished: int = 0


class Reconciler:
    """Settles, every `interval` seconds, what immediate settlement missed."""

    def __init__(
        self,
        jobs: JobStore,
        accounts: AccountStore,
        *,
        grace: timedelta = DEFAULT_GRACE,
        interval: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self._jobs = jobs
        self._accounts = accounts
        self._grace = grace
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="billing-reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run_once(self) -> Pass:
        """One pass over every hold open longer than the grace period."""
        now = datetime.now(UTC)
        older_than = now - self._grace
        settled = released = unfinished = 0
        after: tuple[datetime, str] | None = None
        while True:
            page = await self._accounts.open_holds(older_than, PAGE_SIZE, after)
            for hold in page:
                job = await self._jobs.get(hold.job_id)
                # A job recorded unbilled is not this hold's: that CreateJob met an earlier job
                # of the same request_id and held for nothing.
                if job is None or not job.billed:
                    if await self._accounts.settle(hold.job_id, Ending.NOT_RECORDED) is not None:
                        released += 1
                        log.warning("job %s was held for but not recorded: released", hold.job_id)
                elif await settle_ended(self._accounts, job) is not None:
                    settled += 1
                    log.warning("job %s ended without being settled: settled now", job.id)
                else:
                    unfinished += 1
            if len(page) < PAGE_SIZE:
                break
            after = (page[-1].create_time, page[-1].job_id)
        await self._accounts.expire_rate_counters(now - RATE_COUNTER_KEEP)
        return Pass(settled, released, unfinished)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("billing reconciliation failed; again in %.0f s", self._interval)
