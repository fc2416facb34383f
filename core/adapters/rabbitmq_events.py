"""The EventBus on RabbitMQ: job events over a topic exchange, routed by job id, so every server
process feeds its own watchers whichever process recorded the event.

Each bus has one exclusive, auto-delete queue, bound once, when it opens, to the events it is
interested in: routing keys are `{job_id}.cancel` for cancels and `{job_id}.update` for the rest,
so a server binds `#` (its watchers may watch any job) and a worker `*.cancel` (the one event it
must hear of at once; a newer attempt starts only once the worker's lease lapsed, which its own
heartbeat finds). Watching a job is then a local matter: a MemoryEventBus fans the
events out, and no watcher waits on the broker (a bind per watch is a synchronous round trip,
and a channel runs them one at a time). Events a bus publishes reach its own watchers at once and
are skipped when the broker hands them back. Publishing is fire-and-forget: the job store holds
every event and watchers fill gaps from it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, suppress
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
from core.jobs import JobEvent, JobState, StateChanged

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


ALL_EVENTS = "#"
CANCELS = "*.cancel"


def routing_key(event: JobEvent) -> str:
    payload = event.payload
    cancel = isinstance(payload, StateChanged) and payload.state is JobState.CANCELLED
    return f"{event.job_id}.{'cancel' if cancel else 'update'}"


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
        self._origin = uuid.uuid4().hex  # marks this bus's own events
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        topology: Topology | None = None,
        queue_limit: int = QUEUE_LIMIT,
        interest: str = ALL_EVENTS,
    ) -> RabbitEventBus:
        """`interest` is the routing-key pattern this bus receives: ALL_EVENTS or CANCELS."""
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
            await queue.bind(exchange, routing_key=interest)
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
                await self._exchange.publish(message, routing_key=routing_key(event))
        except (TimeoutError, *_ERRORS) as exc:
            log.warning(
                "event %d of job %s not sent to other servers: %s",
                event.sequence,
                event.job_id,
                type(exc).__name__,
            )

    def subscribe(self, job_id: str) -> AbstractAsyncContextManager[AsyncIterator[JobEvent]]:
        return self._local.subscribe(job_id)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._local.close()
        with suppress(*_ERRORS):
            await self._connection.close()

    async def _receive(self, message: AbstractIncomingMessage) -> None:
        if message.app_id == self._origin:
            return  # already handed to local watchers when published
        try:
            event = event_from_dict(codec.loads(message.body))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed event message: %r", message.body[:200])
            return
        await self._local.publish(event)
