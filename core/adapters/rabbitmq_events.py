"""The EventBus on RabbitMQ: job events over a topic exchange, routed by job id, so every server
process feeds its own watchers whichever process recorded the event.

Each bus binds one exclusive, auto-delete queue, and binds it to a job id only while a local
watcher of that job exists; a MemoryEventBus fans the events out to those watchers. Events a
bus publishes reach its own watchers at once, without the round trip, and are skipped when the
broker hands them back. Publishing is fire-and-forget: the job store holds every event and
watchers fill gaps from it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from core.adapters import codec
from core.adapters.memory_events import QUEUE_LIMIT, MemoryEventBus
from core.adapters.rabbitmq import Topology, connect
from core.jobs import JobEvent

log = logging.getLogger(__name__)

# A bus whose broker connection is down drops events rather than stall the job that reports
# them (aio-pika can wait forever on a connection being restored).
PUBLISH_TIMEOUT_SECONDS = 1.0
EVENT_MESSAGE_TYPE = "jobgate.event"
_ERRORS = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError)


def event_to_dict(event: JobEvent) -> dict[str, Any]:
    return {
        "job_id": event.job_id,
        "sequence": event.sequence,
        "time": codec.time_to_text(event.time),
        "attempt": event.attempt,
        "payload": codec.payload_to_dict(event.payload),
    }


def event_from_dict(data: dict[str, Any]) -> JobEvent:
    return JobEvent(
        job_id=data["job_id"],
        sequence=data["sequence"],
        time=codec.time_from_text(data["time"]),
        attempt=data["attempt"],
        payload=codec.payload_from_dict(data["payload"]),
    )


@dataclass
class _Binding:
    """How many local watchers want one job id, and whether the queue is bound to it."""

    watchers: int = 0
    bound: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RabbitEventBus:
    """See core.ports.EventBus; open with `RabbitEventBus.open`."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractChannel,
        exchange: AbstractExchange,
        queue: AbstractQueue,
        queue_limit: int,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._exchange = exchange
        self._queue = queue  # held: a robust channel restores only live queues (aio-pika #536)
        self._local = MemoryEventBus(queue_limit)
        self._bindings: dict[str, _Binding] = {}
        self._origin = uuid.uuid4().hex  # marks this bus's own events
        self._closed = False

    @classmethod
    async def open(
        cls, url: str, *, topology: Topology | None = None, queue_limit: int = QUEUE_LIMIT
    ) -> RabbitEventBus:
        topology = topology or Topology()
        connection = await connect(url, "jobgate events")
        try:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                topology.events_exchange, "topic", durable=True
            )
            queue = await channel.declare_queue(
                f"{topology.events_exchange}.{os.getpid()}.{uuid.uuid4().hex[:8]}",
                exclusive=True,
                auto_delete=True,
            )
            bus = cls(connection, channel, exchange, queue, queue_limit)
            await queue.consume(bus._receive, no_ack=True)
        except BaseException:
            await connection.close()
            raise
        return bus

    async def publish(self, event: JobEvent) -> None:
        if self._closed:
            return
        await self._local.publish(event)
        message = aio_pika.Message(
            codec.dumps(event_to_dict(event)).encode(),
            content_type="application/json",
            type=EVENT_MESSAGE_TYPE,
            app_id=self._origin,
        )
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                await self._exchange.publish(message, routing_key=event.job_id)
        except (TimeoutError, *_ERRORS) as exc:
            log.warning(
                "event %d of job %s not sent to other servers: %s",
                event.sequence,
                event.job_id,
                type(exc).__name__,
            )

    @asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[AsyncIterator[JobEvent]]:
        if self._closed:
            async with self._local.subscribe(job_id) as events:
                yield events
            return
        binding = self._bindings.setdefault(job_id, _Binding())
        binding.watchers += 1
        try:
            await self._bind(job_id, binding)
            async with self._local.subscribe(job_id) as events:
                yield events
        finally:
            binding.watchers -= 1
            await self._unbind_if_unwatched(job_id, binding)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._local.close()
        with suppress(*_ERRORS):
            await self._connection.close()

    async def _bind(self, job_id: str, binding: _Binding) -> None:
        async with binding.lock:
            if binding.bound:
                return
            try:
                await self._queue.bind(self._exchange, routing_key=job_id)
            except _ERRORS as exc:
                # Best effort: this watcher still gets this process's events, and the store.
                log.warning("job %s: cannot watch other servers' events: %r", job_id, exc)
                return
            binding.bound = True

    async def _unbind_if_unwatched(self, job_id: str, binding: _Binding) -> None:
        async with binding.lock:
            if binding.watchers:
                return
            if binding.bound and not self._closed:
                with suppress(*_ERRORS):
                    await self._queue.unbind(self._exchange, routing_key=job_id)
            binding.bound = False
            # A watcher may have come while unbinding: it binds again, under this lock.
            if not binding.watchers and self._bindings.get(job_id) is binding:
                del self._bindings[job_id]

    async def _receive(self, message: AbstractIncomingMessage) -> None:
        if message.app_id == self._origin:
            return  # already handed to local watchers when published
        try:
            event = event_from_dict(codec.loads(message.body))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed event message: %r", message.body[:200])
            return
        await self._local.publish(event)
