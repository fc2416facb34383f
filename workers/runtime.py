"""The worker: takes deliveries from the broker, runs each job's provider as one attempt, records
the outcome and only then acknowledges the delivery.

An attempt ends in one of four ways:
- with an outcome (SUCCEEDED, or FAILED with a reason), recorded and then acked;
- retried: the provider raised something unexpected (not JobFailed) and attempts remain; a log
  line says so, the job is published again after a backoff, and the delivery is acked. The job
  stays RUNNING until the next attempt claims it;
- lost: the job was cancelled or a newer attempt took it over; nothing more is recorded, acked;
- unrecorded: a backend failed or the worker is stopping; the delivery goes back to the queue
  and the job runs again as its next attempt. The attempt fence keeps this one from writing.

A billed job's outcome is settled (core.settlement) right after it is recorded, before the ack:
one account-store transaction. If that fails, or the worker dies in between, the recorded
outcome (with the attempt's usage units) lets the server's reconciler settle it later.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from core.backends import Backends
from core.billing import Ending
from core.errors import Reason
from core.jobs import Job, JobError, JobEvent, JobState, LogLevel, LogLine, StateChanged
from core.ports import Delivery, Held, JobMessage
from core.providers.base import JobFailed, Provider, ProviderUnavailable
from core.providers.registry import ProviderRegistry
from core.settings import Settings
from workers.context import AttemptContext, AttemptLost, BackendUnavailable, publish
from workers.retry import NO_RETRIES, RetryPolicy

log = logging.getLogger(__name__)

# Before a delivery whose outcome could not be recorded goes back to the queue: a store that is
# down should not be hammered by the same job in a tight loop.
REQUEUE_BACKOFF_SECONDS = 1.0
# Without a lease, how often a running attempt checks the job store that it still owns its
# job: the event bus that tells it about a cancel at once is best effort. With a lease, the
# heartbeat that renews it (three per lease) is that check.
OWNERSHIP_CHECK_SECONDS = 5.0
NO_LEASE = timedelta(0)
# How long stop() waits for cancelled jobs to wind down before requeueing them regardless.
STOP_TIMEOUT_SECONDS = 5.0


@dataclass
class _InFlight:
    """A delivery being handled; `settled` once it has been acked or rejected."""

    delivery: Delivery
    settled: bool = False
    attempt: Job | None = None  # the job as this delivery's claim started it


class Worker:
    """Runs jobs from the broker, at most `concurrency` at a time. `models` limits which models
    it takes (all the broker carries when None); each must be served by `providers`. `retry`
    says how often and when a job whose provider failed unexpectedly runs again."""

    def __init__(
        self,
        backends: Backends,
        providers: ProviderRegistry,
        *,
        concurrency: int,
        models: Collection[str] | None = None,
        retry: RetryPolicy = NO_RETRIES,
        lease: timedelta = NO_LEASE,
        handoff_seconds: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if models is not None:
            unserved = sorted(m for m in models if m not in providers.catalog)
            if unserved:
                raise ValueError(f"no provider serves model(s) {', '.join(unserved)}")
        self._backends = backends
        self._providers = providers
        self._concurrency = concurrency
        self._models = tuple(models) if models is not None else None
        self._retry = retry
        self._lease = lease
        self._handoff_seconds = handoff_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: dict[asyncio.Task[None], _InFlight] = {}
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._grace = 0.0
        self._started = False

    @classmethod
    def from_settings(
        cls, backends: Backends, providers: ProviderRegistry, settings: Settings
    ) -> Worker:
        """The worker the settings describe: concurrency, models, retries, lease, handoff."""
        return cls(
            backends,
            providers,
            concurrency=settings.worker_concurrency,
            models=settings.worker_models or None,
            retry=RetryPolicy.from_settings(settings),
            lease=timedelta(seconds=settings.job_lease_seconds),
            handoff_seconds=settings.broker_handoff_seconds,
        )

    async def run(self) -> None:
        """Consumes until stop() (or the broker ends the stream), then drains and returns."""
        if self._started:
            raise RuntimeError("a Worker runs only once")
        self._started = True
        try:
            broker = self._backends.broker
            async with broker.consume(self._models, prefetch=self._concurrency) as deliveries:
                intake = asyncio.create_task(self._take(deliveries), name="worker-intake")
                stop = asyncio.create_task(self._stop_requested.wait(), name="worker-stop")
                try:
                    await asyncio.wait({intake, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (intake, stop):
                        task.cancel()
                    await asyncio.gather(intake, stop, return_exceptions=True)
                    grace = self._grace if self._stop_requested.is_set() else 0.0
                    await self._drain(grace)
                if not intake.cancelled() and (error := intake.exception()) is not None:
                    raise error
        finally:
            self._stopped.set()

    async def stop(self, grace: float) -> None:
        """Stops taking deliveries, gives running jobs `grace` seconds to finish, then stops the
        rest without an outcome and puts their deliveries back for another attempt."""
        self._grace = grace
        self._stop_requested.set()
        if self._started:
            await self._stopped.wait()

    async def _take(self, deliveries: AsyncIterator[Delivery]) -> None:
        while True:
            # A free slot first: a delivery taken without one would wait unacked for nothing.
            await self._slots.acquire()
            delivery = await anext(deliveries, None)
            if delivery is None:
                self._slots.release()
                log.info("the broker ended the delivery stream")
                return
            in_flight = _InFlight(delivery)
            task = asyncio.create_task(self._handle(in_flight))
            self._in_flight[task] = in_flight
            task.add_done_callback(self._untrack)

    def _untrack(self, task: asyncio.Task[None]) -> None:
        del self._in_flight[task]
        self._slots.release()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("a delivery handler failed", exc_info=error)

    async def _drain(self, grace: float) -> None:
        if not self._in_flight:
            return
        _, unfinished = await asyncio.wait(set(self._in_flight), timeout=grace)
        abandoned = [self._in_flight[task] for task in unfinished]
        for task in unfinished:
            task.cancel()
        if unfinished:
            _, stuck = await asyncio.wait(unfinished, timeout=STOP_TIMEOUT_SECONDS)
            if stuck:
                log.error("%d job(s) ignored cancellation; requeued anyway", len(stuck))
        for in_flight in abandoned:
            await self._release(in_flight.attempt)
            await self._settle(in_flight, ack=False)
        if abandoned:
            log.info("stopped %d unfinished job(s); they go back to the queue", len(abandoned))

    async def _handle(self, in_flight: _InFlight) -> None:
        job_id = in_flight.delivery.message.job_id
        handoff = None
        if self._handoff_seconds is not None:
            handoff = asyncio.create_task(self._hand_off_later(in_flight, self._handoff_seconds))
        try:
            await self._run_job(in_flight)
        except (Exception, BackendUnavailable):
            log.exception("job %s: could not record the attempt; it goes back to the queue", job_id)
            await self._requeue(in_flight)
        else:
            await self._settle(in_flight, ack=True)
        finally:
            if handoff is not None:
                handoff.cancel()

    async def _hand_off_later(self, in_flight: _InFlight, after: float) -> None:
        """Keeps a long job's delivery under the broker's consumer_timeout: after `after`
        seconds, a copy delayed by one lease replaces it (the original is acked). The copy meets
        the job still held by this attempt and waits again, or finds it ended, or, if this worker
        died, starts the next attempt."""
        await asyncio.sleep(after)
        message = in_flight.delivery.message
        try:
            await self._backends.broker.publish(message, delay=self._lease.total_seconds())
        except Exception:
            log.warning("job %s: could not hand its delivery off", message.job_id, exc_info=True)
            return
        await self._settle(in_flight, ack=True)
        log.info("job %s: running past %.0f s; its delivery was handed off", message.job_id, after)

    async def _requeue(self, in_flight: _InFlight) -> None:
        """Puts the job back after a pause: as a delayed copy, so that a store outage does not
        use up the broker's delivery limit; as the delivery itself when even that fails."""
        try:
            await self._backends.broker.publish(
                in_flight.delivery.message, delay=REQUEUE_BACKOFF_SECONDS
            )
        except Exception:
            await asyncio.sleep(REQUEUE_BACKOFF_SECONDS)
            await self._settle(in_flight, ack=False)
        else:
            await self._settle(in_flight, ack=True)

    async def _defer(self, message: JobMessage, held: Held) -> None:
        """A live attempt holds the job: this copy of its message comes back once the lease
        would run out, to take over if that attempt's worker died by then."""
        wait = max(0.0, (held.until - datetime.now(UTC)).total_seconds())
        jitter = random.uniform(0.0, max(0.05, 0.1 * self._lease.total_seconds()))
        await self._backends.broker.publish(message, delay=wait + jitter)
        log.debug(
            "job %s is held by attempt %d; looking again in %.1f s",
            message.job_id,
            held.job.attempt,
            wait + jitter,
        )

    async def _release(self, job: Job | None) -> None:
        """Gives up the lease of an attempt this worker stops, so the next one need not wait."""
        if job is None:
            return
        try:
            await self._backends.jobs.heartbeat(job.id, job.attempt, NO_LEASE)
        except Exception:
            log.warning("job %s: could not release its lease", job.id, exc_info=True)

    async def _settle(self, in_flight: _InFlight, *, ack: bool) -> None:
        """Acks, or rejects with requeue; at most once per delivery."""
        if in_flight.settled:
            return
        in_flight.settled = True
        delivery = in_flight.delivery
        try:
            if ack:
                await delivery.ack()
            else:
                await delivery.reject(requeue=True)
        except Exception:
            # Unsettled deliveries return to the queue when the consumer closes; a redelivered
            # job that already ended is skipped, so nothing runs twice to completion.
            log.warning(
                "could not %s the delivery of job %s",
                "ack" if ack else "requeue",
                delivery.message.job_id,
                exc_info=True,
            )

    async def _run_job(self, in_flight: _InFlight) -> None:
        """Claims the job, runs its attempt and records the outcome. Raises when a backend fails
        before the outcome is recorded."""
        message = in_flight.delivery.message
        jobs, events = self._backends.jobs, self._backends.events
        # Subscribed before the claim, so a cancel right after the claim cannot go unseen.
        async with events.subscribe(message.job_id) as job_events:
            claimed = await jobs.claim(message.job_id, self._lease)
            if claimed is None:
                log.debug("job %s is missing or finished: skipped", message.job_id)
                return
            if isinstance(claimed, Held):
                await self._defer(message, claimed)
                return
            job, claim_event = claimed
            in_flight.attempt = job
            await publish(events, claim_event)
            # A task an earlier attempt submitted (maybe on the fallback) is resumed where it
            # runs: never paid for twice.
            model = job.provider_task.model if job.provider_task else job.model
            try:
                provider = self._providers.provider_for(model)
            except KeyError:
                outcome: Outcome | None = Outcome.failed(
                    Reason.PROVIDER_ERROR, f"model {model} is not served by this worker"
                )
            else:
                outcome = await self._attempt(job, model, provider, job_events)
        if outcome is None:
            log.debug("job %s attempt %d lost the job: nothing recorded", job.id, job.attempt)
            return
        if outcome.transient:
            if self._retry.retries_after(job.attempt):
                await self._retry_later(job, outcome)
                return
            outcome = outcome.given_up(job.attempt, self._retry)
        event = await jobs.finish(
            job.id, job.attempt, outcome.state, outcome.error, outcome.usage_units
        )
        if event is None:
            log.debug("job %s attempt %d lost the job before finishing", job.id, job.attempt)
            return
        await publish(events, event)
        if job.billed:
            await self._bill(job, outcome)

    async def _bill(self, job: Job, outcome: Outcome) -> None:
        """Settles the recorded outcome; on failure the reconciler settles it from the record."""
        ending = Ending.SUCCEEDED if outcome.state is JobState.SUCCEEDED else Ending.FAILED
        try:
            await self._backends.accounts.settle(job.id, ending, outcome.usage_units)
        except Exception:
            log.warning("job %s: could not settle; the reconciler will", job.id, exc_info=True)

    async def _retry_later(self, job: Job, outcome: Outcome) -> None:
        """Says on the job that this attempt failed, then queues the job again after the
        backoff. A failure to queue it raises, so the delivery goes back to the queue instead."""
        delay = max(self._retry.delay(job.attempt), outcome.retry_after)
        line = LogLine(
            f"attempt {job.attempt} failed: {outcome.cause}; retrying in {delay:.1f} s",
            LogLevel.WARNING,
        )
        event = await self._backends.jobs.record(job.id, job.attempt, line)
        if event is None:
            log.debug("job %s attempt %d lost the job before retrying", job.id, job.attempt)
            return
        await publish(self._backends.events, event)
        # The retry must find the job free, not held by this ended attempt's lease.
        await self._release(job)
        await self._backends.broker.publish(JobMessage(job_id=job.id, model=job.model), delay=delay)
        log.info("job %s: %s", job.id, line.message)

    async def _attempt(
        self, job: Job, model: str, provider: Provider, job_events: AsyncIterator[JobEvent]
    ) -> Outcome | None:
        """Runs the provider; the outcome to record, or None when the attempt lost the job."""
        ctx = AttemptContext(job, self._backends.jobs, self._backends.events, self._backends.blobs)
        ctx.run_as(model)
        attempt = _RunningAttempt(
            job,
            asyncio.create_task(
                self._run_provider(ctx, provider), name=f"job {job.id} attempt {job.attempt}"
            ),
        )
        watcher = asyncio.create_task(self._stop_when_lost(attempt, job_events))
        try:
            await self._supervise(attempt)
        finally:
            watcher.cancel()
            # Stops the provider when the worker is stopping; a no-op when it has ended.
            attempt.task.cancel()
            await asyncio.wait({watcher, attempt.task})
        outcome = attempt.outcome()
        return replace(outcome, usage_units=ctx.usage_units) if outcome else None

    async def _run_provider(self, ctx: AttemptContext, provider: Provider) -> None:
        """Runs the provider; while it is unavailable and the catalog names a fallback this
        worker serves, runs the job on the fallback instead, in the same attempt."""
        try:
            await provider.run(ctx)
        except ProviderUnavailable as error:
            model = ctx.job.model
            fallback = self._providers.fallback_of(model)
            # A task already submitted is paid for: it is resumed later, never replaced.
            if fallback is None or ctx.job.provider_task is not None:
                raise
            await ctx.log(
                f"{model} is unavailable ({error.message}); running on {fallback}", LogLevel.WARNING
            )
            ctx.run_as(fallback)
            await self._providers.provider_for(fallback).run(ctx)

    async def _stop_when_lost(
        self, attempt: _RunningAttempt, job_events: AsyncIterator[JobEvent]
    ) -> None:
        try:
            async for event in job_events:
                if attempt.superseded_by(event):
                    attempt.stop_lost()
                    return
        except Exception:
            log.warning(
                "job %s: event bus failed; checking the store instead",
                attempt.job.id,
                exc_info=True,
            )

    async def _supervise(self, attempt: _RunningAttempt) -> None:
        """Waits for the provider, renewing the attempt's lease now and then; the renewal also
        tells whether the attempt still owns its job."""
        lease = self._lease.total_seconds()
        interval = lease / 3 if lease else OWNERSHIP_CHECK_SECONDS
        while True:
            done, _ = await asyncio.wait({attempt.task}, timeout=interval)
            if done:
                return
            if not await self._still_owns(attempt.job):
                attempt.stop_lost()

    async def _still_owns(self, job: Job) -> bool:
        try:
            return await self._backends.jobs.heartbeat(job.id, job.attempt, self._lease)
        except Exception:
            log.warning("job %s: could not renew its lease", job.id, exc_info=True)
            return True


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as recorded by JobStore.finish."""

    state: JobState
    error: JobError | None = None
    # Set when the provider raised something unexpected or was unavailable: another attempt
    # may succeed, no sooner than `retry_after` seconds.
    cause: str | None = None
    retry_after: float = 0.0
    # What the attempt reported through RunContext.report_usage: what success is billed by.
    usage_units: int = 0

    @property
    def transient(self) -> bool:
        return self.cause is not None

    @classmethod
    def failed(cls, reason: Reason, message: str) -> Outcome:
        return cls(JobState.FAILED, JobError(reason, message))

    @classmethod
    def unexpected(cls, error: BaseException) -> Outcome:
        cause = type(error).__name__
        return cls(
            JobState.FAILED, JobError(Reason.PROVIDER_ERROR, f"the provider failed: {cause}"), cause
        )

    def given_up(self, attempts: int, retry: RetryPolicy) -> Outcome:
        """The final outcome once no attempt remains; a policy without retries says nothing
        about attempts."""
        if retry.max_attempts == 1 or self.error is None:
            return self
        plural = "s" if attempts != 1 else ""
        return Outcome.failed(
            self.error.reason, f"gave up after {attempts} attempt{plural}: {self.error.message}"
        )


@dataclass
class _RunningAttempt:
    job: Job
    task: asyncio.Task[None]
    lost: bool = False

    def superseded_by(self, event: JobEvent) -> bool:
        """A cancel, or a newer attempt's start: this attempt no longer owns the job. Events of
        older attempts can arrive late and mean nothing."""
        payload = event.payload
        return isinstance(payload, StateChanged) and (
            payload.state is JobState.CANCELLED or event.attempt > self.job.attempt
        )

    def stop_lost(self) -> None:
        self.lost = True
        self.task.cancel()

    def outcome(self) -> Outcome | None:
        """What to record for the ended task; None when it must record nothing."""
        task = self.task
        if task.cancelled():
            if self.lost:
                return None
            return Outcome.failed(Reason.PROVIDER_ERROR, "the provider failed: CancelledError")
        error = task.exception()
        if error is None:
            return Outcome(JobState.SUCCEEDED)
        if isinstance(error, AttemptLost):
            return None
        if isinstance(error, ProviderUnavailable):
            return Outcome(
                JobState.FAILED,
                JobError(error.reason, error.message),
                cause=error.message,
                retry_after=error.retry_after,
            )
        if isinstance(error, JobFailed):
            return Outcome.failed(error.reason, error.message)
        if isinstance(error, Exception):
            log.error(
                "job %s attempt %d: the provider of %s raised",
                self.job.id,
                self.job.attempt,
                self.job.model,
                exc_info=error,
            )
            return Outcome.unexpected(error)
        # BackendUnavailable, or an interpreter exit: nothing to record here.
        raise error
