"""The EventBus in process memory: job events fanned out to the watchers of that job only."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.jobs import JobEvent
from core.ports import Subscription

log = logging.getLogger(__name__)

# Per subscriber. A watcher that falls this far behind loses its OLDEST events, never blocks
# the publisher: the bus is best effort and watchers fill any gap in sequence numbers from the
# job store, which holds every event.
QUEUE_LIMIT = 1024


class _Subscription:
    def __init__(self, job_id: str, limit: int) -> None:
        self.job_id = job_id
        self.events: deque[JobEvent] = deque(maxlen=limit)
        self.wake = asyncio.Event()
        self.closed = False
        self.dropped = 0

    def put(self, event: JobEvent) -> None:
        if len(self.events) == self.events.maxlen:
            self.dropped += 1
            if self.dropped == 1:
                log.warning(
                    "watcher of job %s fell behind; dropping its oldest events", self.job_id
                )
        self.events.append(event)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> JobEvent:
        while not self.events:
            if self.closed:
                raise StopAsyncIteration
            self.wake.clear()
            await self.wake.wait()
        return self.events.popleft()


class MemoryEventBus:
    """Subscribers indexed by job id, so publishing costs nothing for jobs nobody watches."""

    def __init__(self, queue_limit: int = QUEUE_LIMIT) -> None:
        self._queue_limit = queue_limit
        self._subscribers: dict[str, set[_Subscription]] = {}
        self._closed = False

    async def publish(self, event: JobEvent) -> None:
        # After close() there is nobody left to tell: best effort means dropping quietly.
        for subscription in self._subscribers.get(event.job_id, ()):
            subscription.put(event)

    @asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[Subscription]:
        subscription = _Subscription(job_id, self._queue_limit)
        if self._closed:
            subscription.close()
            yield subscription
            return
        subscribers = self._subscribers.setdefault(job_id, set())
        subscribers.add(subscription)
        try:
            yield subscription
        finally:
            subscription.close()
            subscribers.discard(subscription)
            if not subscribers and self._subscribers.get(job_id) is subscribers:
                del self._subscribers[job_id]

    async def close(self) -> None:
        self._closed = True
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.close()
        self._subscribers.clear()

    def subscriber_count(self, job_id: str) -> int:
        return len(self._subscribers.get(job_id, ()))
