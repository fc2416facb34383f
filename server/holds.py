"""CreateJob's side of billing: a hold for the job's maximum price before it is recorded, and
its release when the job is not recorded after all.

A job whose maximum price is 0 on a tariff without limits needs no hold and costs no account
store round trip: the tariff comes with the (cached) principal. Any other job costs one
account-store transaction here and one when it is settled.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from core.backends import Backends
from core.billing import Ending, HoldRequest
from core.jobs import NewJob
from core.ports import Principal

log = logging.getLogger(__name__)


class Holds:
    def __init__(self, backends: Backends) -> None:
        self._backends = backends

    async def place(self, principal: Principal, new_job: NewJob) -> tuple[NewJob, bool]:
        """The job as it must be recorded, and whether this call placed a new hold.

        A held job is recorded `billed`. A request_id held for before keeps its first job id, so
        the job store finds (or, if the first call died before recording it, records) that job
        and nothing is held twice."""
        tariff = principal.tariff
        terms = tariff.terms_for(self._backends.catalog.get(new_job.model))
        if terms.hold_micros == 0 and not tariff.limited:
            return new_job, False
        request = HoldRequest(principal.owner, new_job.id, new_job.request_id, terms, tariff)
        held_for = await self._backends.accounts.hold(request)
        return replace(new_job, id=held_for, billed=True), held_for == new_job.id

    async def release(self, job_id: str) -> None:
        """Releases the hold of a job that is not recorded with it. Best effort: the
        reconciler releases what this could not."""
        try:
            await self._backends.accounts.settle(job_id, Ending.NOT_RECORDED)
        except Exception:
            log.warning("job %s: could not release its hold; the reconciler will", job_id)

    async def release_unless_recorded(self, job_id: str) -> None:
        """After a failed record: the job may be recorded even so (a reply lost after the
        commit); then it keeps its hold and is settled when it ends."""
        try:
            recorded = await self._backends.jobs.get(job_id) is not None
        except Exception:
            log.warning("job %s: cannot tell whether it was recorded; the reconciler will", job_id)
            return
        if not recorded:
            await self.release(job_id)
