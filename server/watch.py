"""WatchJob: the job as it is (or the events a client missed), then every new event, in order,
with no gap and no repeat, until the terminal one.

The event bus is fast but best effort; the job store holds every event. So a stream subscribes to
the bus BEFORE it reads the store (nothing recorded in between can slip past), forwards bus events
that continue its sequence, drops the ones it already sent, and fills any gap, and any silence,
from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

from jobgate.v1 import job_service_pb2

from core.errors import InvalidArgument, NotFound, Reason
from core.jobs import Job, JobEvent, JobState, StateChanged, job_name
from core.ports import EventBus, JobStore, Subscription
from server.convert import JobRenderer, timestamp
from server.status import Unavailable

log = logging.getLogger(__name__)

Response = job_service_pb2.WatchJobResponse
# Queue position is a hint, and counting queued jobs costs the store a query: a job is counted
# once it has waited 1 s (most start sooner, and cost no count at all), then less often while
# nothing changes, and a server runs only a few counts at once (a stream whose turn finds them
# busy tries next time), so thousands of queued watchers cannot flood the job store.
QUEUE_CHECK_SECONDS = 1.0
QUEUE_CHECK_MAX_SECONDS = 10.0
QUEUE_CHECKS_IN_FLIGHT = 4
REPLAY_PAGE = 500
# Events rendered lately, for the other watchers of the same job.
RENDERED_LIMIT = 1024


class JobWatcher:
    """Serves WatchJob streams; `draining` set ends them all (UNAVAILABLE, SHUTTING_DOWN) so
    that clients resume elsewhere by sequence."""

    def __init__(
        self,
        jobs: JobStore,
        events: EventBus,
        renderer: JobRenderer,
        keepalive_seconds: float,
        draining: asyncio.Event,
    ) -> None:
        self.jobs = jobs
        self.events = events
        self.renderer = renderer
        self.keepalive_seconds = keepalive_seconds
        self.draining = draining
        self.queue_checks = asyncio.Semaphore(QUEUE_CHECKS_IN_FLIGHT)
        self._feeds: set[Subscription] = set()
        self._rendered: dict[tuple[str, int], tuple[JobEvent, Response]] = {}

    @property
    def open_streams(self) -> int:
        """How many WatchJob calls are being served right now."""
        return len(self._feeds)

    async def response(self, event: JobEvent) -> Response:
        """The event as a message, rendered once however many streams send it: the bus hands
        every watcher of a job the same event object."""
        key = (event.job_id, event.sequence)
        cached = self._rendered.get(key)
        if cached is not None and cached[0] is event:
            return cached[1]
        response = Response(event=await self.renderer.event(event))
        self._rendered[key] = (event, response)
        if len(self._rendered) > RENDERED_LIMIT:
            del self._rendered[next(iter(self._rendered))]
        return response

    def drain(self) -> None:
        """Ends every stream (UNAVAILABLE, SHUTTING_DOWN) once `draining` is set: closing its
        feed wakes it, so no stream needs a waiter of its own on `draining`."""
        for feed in self._feeds:
            feed.close()

    async def watch(self, job_id: str, owner: str, after_sequence: int) -> AsyncIterator[Response]:
        """Streams the job `job_id` of `owner` from `after_sequence`. Another owner's job is
        NOT_FOUND, exactly like a missing one."""
        if after_sequence < 0:
            raise InvalidArgument("after_sequence", "after_sequence must not be negative")
        if self.draining.is_set():
            raise Unavailable("the server is shutting down; resume the watch elsewhere")
        async with self.events.subscribe(job_id) as live:
            self._feeds.add(live)
            try:
                # Read after subscribing: whatever is recorded from now on also reaches the bus.
                job = await self.jobs.get(job_id)
                if job is None or job.owner != owner:
                    raise NotFound(f"no job {job_name(job_id)}", reason=Reason.JOB_NOT_FOUND)
                # Any sequence a client has seen was recorded before `job` was read.
                if after_sequence > job.event_sequence:
                    raise InvalidArgument(
                        "after_sequence",
                        f"job {job.name} has no event {after_sequence}; "
                        f"its latest is {job.event_sequence}",
                    )
                stream = _Stream(self, job, live)
                async for response in stream.run(after_sequence):
                    yield response
            finally:
                self._feeds.discard(live)

    async def watch_new(
        self, job_id: str, owner: str, create: Callable[[], Awaitable[Job]]
    ) -> AsyncIterator[Response]:
        """RunJob: subscribes before `create` records the job `job_id`, then streams the job
        it returns. A request_id seen before makes `create` return the job recorded then, under
        another id: that one is watched as WatchJob would."""
        if self.draining.is_set():
            raise Unavailable("the server is shutting down; retry on another replica")
        async with self.events.subscribe(job_id) as live:
            self._feeds.add(live)
            try:
                job = await create()
                if job.id == job_id:
                    async for response in _Stream(self, job, live).run(0):
                        yield response
                    return
            finally:
                self._feeds.discard(live)
        async for response in self.watch(job.id, owner, 0):
            yield response


class _Stream:
    """One WatchJob call: what it has sent, and the job's state as of that."""

    def __init__(self, watcher: JobWatcher, job: Job, live: Subscription) -> None:
        self._jobs = watcher.jobs
        self._watcher = watcher
        self._render = watcher.renderer
        self._keepalive = watcher.keepalive_seconds
        self._draining = watcher.draining
        self._queue_checks = watcher.queue_checks
        self._queue_interval = QUEUE_CHECK_SECONDS
        self._job = job
        self._live = live
        self._loop = asyncio.get_running_loop()
        self._last = 0
        self._state = job.state
        self._jobs_ahead: int | None = None
        self._idle_since = self._loop.time()
        waited = (datetime.now(UTC) - job.create_time).total_seconds()
        self._next_queue_check = self._loop.time() + max(0.0, QUEUE_CHECK_SECONDS - waited)

    async def run(self, after_sequence: int) -> AsyncIterator[Response]:
        async for response in self._responses(after_sequence):
            yield response
            self._idle_since = self._loop.time()

    async def _responses(self, after_sequence: int) -> AsyncIterator[Response]:
        job = self._job
        if after_sequence == 0:
            self._last = job.event_sequence
            yield Response(job=await self._render.job(job))
        else:
            self._last = after_sequence
            async for response in self._catch_up():
                yield response
        if self._state.terminal:
            return
        if self._state is JobState.QUEUED and self._loop.time() >= self._next_queue_check:
            async for response in self._queue_position():
                yield response
        async for response in self._follow():
            yield response

    async def _follow(self) -> AsyncIterator[Response]:
        """Live events and timers until the terminal event, the end of the call, or draining."""
        while not self._state.terminal:
            event = await self._next_live()
            responses = self._on_timer() if event is None else self._on_live(event)
            async for response in responses:
                yield response

    async def _next_live(self) -> JobEvent | None:
        """The next live event, or None when a timer is due first. A plain timeout around the
        wait: thousands of streams wake for one event, and a task or asyncio.wait per stream
        and event was most of the cost of waking them."""
        try:
            async with asyncio.timeout_at(self._next_wakeup()):
                return await anext(self._live)
        except TimeoutError:
            return None
        except StopAsyncIteration:
            if self._draining.is_set():
                raise Unavailable(
                    "the server is shutting down; resume the watch elsewhere"
                ) from None
            # The bus closes only when the process is shutting down.
            raise Unavailable("the event feed closed; resume the watch elsewhere") from None

    def _next_wakeup(self) -> float:
        wakeup = self._idle_since + self._keepalive
        if self._state is JobState.QUEUED:
            wakeup = min(wakeup, self._next_queue_check)
        return wakeup

    async def _on_live(self, event: JobEvent) -> AsyncIterator[Response]:
        if event.sequence > self._last + 1:
            # A bus event went missing: the store has it (events are recorded before published).
            async for response in self._catch_up():
                yield response
        if event.sequence <= self._last:
            return
        if event.sequence > self._last + 1:
            log.warning(
                "job %s: event %d is on the bus but %d is not in the store yet",
                event.job_id,
                event.sequence,
                self._last + 1,
            )
            return
        yield await self._event(event)

    async def _on_timer(self) -> AsyncIterator[Response]:
        now = self._loop.time()
        if self._state is JobState.QUEUED and now >= self._next_queue_check:
            async for response in self._queue_position():
                yield response
        if self._loop.time() >= self._idle_since + self._keepalive and not self._state.terminal:
            # Silence may hide a lost bus event: look in the store before saying all is quiet.
            sent = False
            async for response in self._catch_up():
                sent = True
                yield response
            if not sent:
                yield Response(
                    keepalive=job_service_pb2.Keepalive(
                        time=timestamp(datetime.now(UTC)), last_sequence=self._last
                    )
                )

    async def _queue_position(self) -> AsyncIterator[Response]:
        """The job's place in its queue, when it changed; only while it is still QUEUED."""
        if self._state is not JobState.QUEUED:
            return
        if self._queue_checks.locked() and self._jobs_ahead is not None:
            self._next_queue_check = self._loop.time() + self._queue_interval
            return
        async with self._queue_checks:
            ahead = await self._jobs.jobs_ahead(self._job)
        if ahead == self._jobs_ahead:
            self._queue_interval = min(2 * self._queue_interval, QUEUE_CHECK_MAX_SECONDS)
        else:
            self._queue_interval = QUEUE_CHECK_SECONDS
            self._jobs_ahead = ahead
            yield Response(queue_position=job_service_pb2.QueuePosition(jobs_ahead=ahead))
        self._next_queue_check = self._loop.time() + self._queue_interval

    async def _catch_up(self) -> AsyncIterator[Response]:
        """Every stored event after the last one sent."""
        while True:
            events = await self._jobs.events(self._job.id, self._last, REPLAY_PAGE)
            for event in events:
                yield await self._event(event)
            if len(events) < REPLAY_PAGE:
                return

    async def _event(self, event: JobEvent) -> Response:
        self._last = event.sequence
        if isinstance(event.payload, StateChanged):
            self._state = event.payload.state
        return await self._watcher.response(event)
