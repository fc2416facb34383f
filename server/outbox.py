"""The outbox: every recorded job reaches the broker, even when the process that recorded it
died before publishing, or the broker was down.

A job is recorded unpublished. Once the broker confirmed its message, its id is noted here and
marked published in the store with many others in one write. A sweep publishes the jobs that stay
unpublished for longer than SWEEP_AGE: their server crashed or the broker refused. Publishing a
job twice is harmless: a worker that finds the job taken by a live attempt only delays the copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from core.ports import Broker, JobMessage, JobStore

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1
SWEEP_SECONDS = 5.0
SWEEP_AGE = timedelta(seconds=10)
SWEEP_BATCH = 500


class Outbox:
    def __init__(self, jobs: JobStore, broker: Broker) -> None:
        self._jobs = jobs
        self._broker = broker
        self._published: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    def published(self, job_id: str) -> None:
        """Notes that the broker confirmed the job's message; recorded with the next flush."""
        self._published.append(job_id)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(FLUSH_SECONDS, self.flush), name="outbox-flush"),
            asyncio.create_task(self._every(SWEEP_SECONDS, self.sweep), name="outbox-sweep"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.flush()
        except Exception:
            # Whatever stays unmarked is published again by a later sweep: harmless.
            log.warning("outbox: could not mark %d jobs published", len(self._published))

    async def flush(self) -> None:
        batch, self._published = self._published, []
        if not batch:
            return
        try:
            await self._jobs.mark_published(batch)
        except Exception:
            self._published[:0] = batch
            raise

    async def sweep(self) -> int:
        """Publishes jobs recorded long enough ago but never marked published; how many."""
        jobs = await self._jobs.unpublished(datetime.now(UTC) - SWEEP_AGE, SWEEP_BATCH)
        for job in jobs:
            await self._broker.publish(JobMessage(job_id=job.id, model=job.model))
            self.published(job.id)
        if jobs:
            log.warning("published %d jobs that were recorded but never queued", len(jobs))
        return len(jobs)

    @staticmethod
    async def _every(seconds: float, action: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except Exception:
                # The store or the broker is down: the next round tries again.
                log.warning("outbox %s failed", action.__name__, exc_info=True)
