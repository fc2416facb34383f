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

Events leave in batches: publish() queues an event and a sender task ships everything queued in
one AMQP message, so a busy process sends one message per turn of its event loop rather than one
per event (each message is a socket write here and a delivery, a task and a decode in every
server). Nothing waits for a timer: an event queued while the loop is idle leaves at once.
Cancels travel alone under their own routing key, in order with the rest, for the workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
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
from core.ports import Subscription

log = logging.getLogger(__name__)

# A bus whose broker connection is down drops events rather than stall the job that reports
# them (aio-pika can wait forever on a connection being restored).
PUBLISH_TIMEOUT_SECONDS = 1.0
EVENT_MESSAGE_TYPE = "jobgate.events"
BATCH_LIMIT = 500  # events per message
# Events queued while the broker is unreachable; past this the oldest are dropped.
BACKLOG_LIMIT = 20_000
BATCH_ROUTING_KEY = "batch.update"
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


def is_cancel(event: JobEvent) -> bool:
    payload = event.payload
    return isinstance(payload, StateChanged) and payload.state is JobState.CANCELLED


def batches(events: Iterable[JobEvent]) -> Iterator[tuple[str, list[JobEvent]]]:
    """(routing key, events) per message, in order: each cancel alone as `{job_id}.cancel`,
    runs of the other events together, at most BATCH_LIMIT a message."""
    run: list[JobEvent] = []
    for event in events:
        if is_cancel(event):
            if run:
                yield BATCH_ROUTING_KEY, run
                run = []
            yield f"{event.job_id}.cancel", [event]
        else:
            run.append(event)
            if len(run) == BATCH_LIMIT:
                yield BATCH_ROUTING_KEY, run
                run = []
    if run:
        yield BATCH_ROUTING_KEY, run


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
        self._backlog: deque[JobEvent] = deque(maxlen=BACKLOG_LIMIT)
        self._dropping = False
        self._queued = asyncio.Event()
        self._sender = asyncio.create_task(self._send_forever(), name="event-bus-sender")

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
        if len(self._backlog) == BACKLOG_LIMIT and not self._dropping:
            self._dropping = True  # said once per outage, not once per event
            log.warning("event bus backlog full: dropping the oldest events not yet sent")
        self._backlog.append(event)
        self._queued.set()

    def subscribe(self, job_id: str) -> AbstractAsyncContextManager[Subscription]:
        return self._local.subscribe(job_id)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queued.set()  # the sender ships what is queued, then ends
        with suppress(TimeoutError):
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                await asyncio.shield(self._sender)
        self._sender.cancel()
        await self._local.close()
        with suppress(*_ERRORS):
            await self._connection.close()

    async def _send_forever(self) -> None:
        while not (self._closed and not self._backlog):
            await self._queued.wait()
            self._queued.clear()
            pending = list(self._backlog)
            self._backlog.clear()
            self._dropping = False
            for key, events in batches(pending):
                await self._send(key, events)

    async def _send(self, key: str, events: list[JobEvent]) -> None:
        message = aio_pika.Message(
            codec.dumps([event_to_dict(e) for e in events]).encode(),
            content_type="application/json",
            type=EVENT_MESSAGE_TYPE,
            app_id=self._origin,
        )
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                await self._exchange.publish(message, routing_key=key)
        except Exception as exc:  # the sender must outlive any failed message
            log.warning(
                "%d event(s) of job %s and others not sent to other servers: %s",
                len(events),
                events[0].job_id,
                type(exc).__name__,
            )

    async def _receive(self, message: AbstractIncomingMessage) -> None:
        if message.app_id == self._origin:
            return  # already handed to local watchers when published
        try:
            events = [event_from_dict(item) for item in codec.loads(message.body)]
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed event message: %r", message.body[:200])
            return
        for event in events:
            await self._local.publish(event)
