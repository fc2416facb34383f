"""The Broker on RabbitMQ: durable per-model queues, confirmed persistent publishes, delayed
re-publishes through TTL queues, and consumers that survive reconnects.

At-least-once takes all of: publisher confirms, `mandatory` publishes whose return is an
error, persistent messages on durable (quorum by default) queues, and acks only after the
outcome is recorded, which the worker does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    ConsumerTag,
)

from core.adapters.deliveries import Deliveries
from core.adapters.rabbitmq import (
    DELAY_HEADER,
    PUBLISH_TIMEOUT_SECONDS,
    BrokerUnavailable,
    Exchanges,
    RabbitError,
    Topology,
    Unroutable,
    connect,
    declare_exchanges,
    declare_work_queue,
    decode_job_message,
    delay_bucket_ms,
    describe_refusal,
    encode_job_message,
)
from core.ports import JobMessage

log = logging.getLogger(__name__)

# What a channel or connection that went away raises; a robust connection reopens it.
_CONNECTION_ERRORS = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)


class DeliveryClosed(RabbitError):
    """A delivery cannot be settled: already settled, or its consumer or broker is closed."""


class RabbitDelivery:
    """One message handed to one consumer; settle it exactly once with ack() or reject()."""

    def __init__(self, consumer: _Consumer, incoming: AbstractIncomingMessage, message: JobMessage):
        self.message = message
        self.redelivered = bool(incoming.redelivered)
        self._consumer = consumer
        self._incoming = incoming
        self._settled = False

    async def ack(self) -> None:
        self._settle("ack")
        await self._send("ack", self._incoming.ack)

    async def reject(self, *, requeue: bool) -> None:
        self._settle("reject")
        await self._send("reject", lambda: self._incoming.reject(requeue=requeue))

    def _settle(self, action: str) -> None:
        job_id = self.message.job_id
        if self._settled:
            raise DeliveryClosed(f"cannot {action} job {job_id}: already settled")
        if self._consumer.broker.closed:
            raise DeliveryClosed(f"cannot {action} job {job_id}: the broker is closed")
        if self._consumer.closed:
            raise DeliveryClosed(
                f"cannot {action} job {job_id}: its consumer is closed"
                " and the message went back to the queue"
            )
        self._settled = True
        self._consumer.settled(self)

    async def _send(self, action: str, send: Callable[[], Any]) -> None:
        try:
            await send()
        except _CONNECTION_ERRORS as exc:
            # Delivery tags belong to the channel that delivered; when it closed, the broker put
            # the message back, so it comes again and the job store's fences make that harmless.
            log.info(
                "job %s: could not %s its delivery (%s): its channel closed, so the broker"
                " delivers it again",
                self.message.job_id,
                action,
                type(exc).__name__,
            )


class _Consumer:
    """One consume() context: its own channel, the messages it buffered per model, and the
    deliveries it handed out but that are not settled yet."""

    def __init__(self, broker: RabbitBroker, channel: AbstractChannel, prefetch: int) -> None:
        self.broker = broker
        self.channel = channel
        self.prefetch = prefetch
        self.buffers: dict[str, deque[tuple[AbstractIncomingMessage, JobMessage]]] = {}
        self.unacked: set[RabbitDelivery] = set()
        self.wake = asyncio.Event()
        self.closed = False
        # Strong references: a robust channel restores only queues still alive (aio-pika #536).
        self.queues: list[AbstractQueue] = []
        self.tags: list[tuple[AbstractQueue, ConsumerTag]] = []
        self._next = 0  # round-robin position among the buffers

    async def listen(self, queue: AbstractQueue, model: str) -> None:
        self.buffers[model] = deque()
        self.queues.append(queue)

        async def receive(incoming: AbstractIncomingMessage) -> None:
            try:
                message = decode_job_message(incoming.body)
            except ValueError:
                log.error("dead-lettering a malformed message from %s", queue.name, exc_info=True)
                with suppress(*_CONNECTION_ERRORS):
                    await incoming.reject(requeue=False)
                return
            self.buffers[model].append((incoming, message))
            self.wake.set()

        self.tags.append((queue, await queue.consume(receive)))

    def settled(self, delivery: RabbitDelivery) -> None:
        self.unacked.discard(delivery)
        self.wake.set()

    def take(self) -> RabbitDelivery | None:
        """The next delivery, taking turns between models; None when none is buffered or
        `prefetch` are already out."""
        if len(self.unacked) >= self.prefetch:
            return None
        models = tuple(self.buffers)
        for step in range(len(models)):
            index = (self._next + step) % len(models)
            buffer = self.buffers[models[index]]
            while buffer:
                incoming, message = buffer.popleft()
                if _stale(incoming):
                    continue  # its channel closed: the broker delivers it again on the new one
                self._next = index + 1
                delivery = RabbitDelivery(self, incoming, message)
                self.unacked.add(delivery)
                return delivery
        return None

    async def close(self) -> None:
        """Closes the channel, which hands every unsettled message back to the broker."""
        self.closed = True
        self.wake.set()
        if self.channel.is_closed:
            return
        with suppress(*_CONNECTION_ERRORS):
            for queue, tag in self.tags:
                await queue.cancel(tag)
            # Deliveries read before the cancel-ok reach their callbacks one task hop later.
            await asyncio.sleep(0)
            await self._hand_back_untouched()
            await self.channel.close()

    async def _hand_back_untouched(self) -> None:
        """Messages buffered but never handed out go back as fresh copies: returned by the
        channel close they would count as delivered, and a worker restarting a few times would
        push innocent jobs to the dead-letter queue after the delivery limit."""
        for model, buffer in self.buffers.items():
            while buffer and not self.broker.closed:
                incoming, message = buffer.popleft()
                if _stale(incoming):
                    continue
                try:
                    await self.broker.publish(message)
                except RabbitError:
                    log.warning("could not hand back a message of model %s", model, exc_info=True)
                    return  # the channel close returns the rest
                await incoming.ack()


def _stale(incoming: AbstractIncomingMessage) -> bool:
    try:
        incoming.channel  # noqa: B018 (raises once the delivering channel closed)
    except aiormq.exceptions.ChannelInvalidStateError:
        return True
    return False


class RabbitBroker:
    """See core.ports.Broker for the semantics, and core.adapters.rabbitmq for the topology.

    Open with `RabbitBroker.open`. Work queues are declared for `models` at open and for any
    other model the first time it is published or consumed, so no publish of a known model is
    unroutable; a worker consuming every model (models=None) consumes the queues of those.
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractChannel,
        exchanges: Exchanges,
        topology: Topology,
    ) -> None:
        self.topology = topology
        self.closed = False
        self._connection = connection
        self._channel = channel
        self._exchanges = exchanges
        self._queues: dict[str, AbstractQueue] = {}
        self._delay_queues: dict[int, AbstractQueue] = {}
        self._consumers: set[_Consumer] = set()

    @classmethod
    async def open(
        cls, url: str, *, topology: Topology | None = None, models: Iterable[str] = ()
    ) -> RabbitBroker:
        """Connects and declares the topology; raises BrokerUnavailable (or RabbitError for a
        topology the broker refuses) with one clear line."""
        topology = topology or Topology()
        connection = await connect(url, "jobgate broker")
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            broker = cls(connection, channel, await declare_exchanges(channel, topology), topology)
            for model in models:
                await broker._work_queue(model)
        except BaseException:
            await connection.close()
            raise
        return broker

    @property
    def models(self) -> tuple[str, ...]:
        """The models whose work queues this broker has declared."""
        return tuple(self._queues)

    async def publish(self, message: JobMessage, *, delay: float = 0.0) -> None:
        if self.closed:
            raise BrokerUnavailable(f"cannot publish job {message.job_id}: the broker is closed")
        await self._work_queue(message.model)
        exchange = self._exchanges.work
        headers: dict[str, Any] = {}
        if delay > 0:
            delay_ms = delay_bucket_ms(delay)
            await self._delay_queue(delay_ms)
            exchange, headers = self._exchanges.delay, {DELAY_HEADER: str(delay_ms)}
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                await exchange.publish(
                    encode_job_message(message, headers), routing_key=message.model, mandatory=True
                )
        except aiormq.exceptions.PublishError as exc:
            raise Unroutable(
                f"job {message.job_id}: no queue takes model {message.model!r}"
                f" (the broker returned it: {exc})"
            ) from None
        except aiormq.exceptions.DeliveryError as exc:
            raise BrokerUnavailable(
                f"job {message.job_id}: the broker refused the message ({exc})"
            ) from None
        except TimeoutError:
            raise BrokerUnavailable(
                f"job {message.job_id}: no confirm from the broker within"
                f" {PUBLISH_TIMEOUT_SECONDS:g} s"
            ) from None
        except _CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(
                f"job {message.job_id}: could not publish ({type(exc).__name__}: {exc})"
            ) from None

    @asynccontextmanager
    async def consume(
        self, models: Collection[str] | None, prefetch: int
    ) -> AsyncIterator[AsyncIterator[RabbitDelivery]]:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, not {prefetch}")
        if models is not None and not models:
            raise ValueError("models is empty: pass None to consume every model")
        if self.closed:
            raise BrokerUnavailable("cannot consume: the broker is closed")
        names = tuple(dict.fromkeys(models)) if models is not None else self.models
        for model in names:
            await self._work_queue(model)
        # A channel per consumer: closing it returns exactly this consumer's unacked messages.
        # The broker applies prefetch per queue; _Consumer.take applies it across them.
        channel = await self._connection.channel()
        consumer = _Consumer(self, channel, prefetch)
        self._consumers.add(consumer)
        try:
            await channel.set_qos(prefetch_count=prefetch)
            for model in names:
                await consumer.listen(
                    await declare_work_queue(channel, self.topology, model), model
                )
            yield Deliveries(consumer)
        finally:
            self._consumers.discard(consumer)
            await consumer.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for consumer in self._consumers:
            consumer.wake.set()
        with suppress(*_CONNECTION_ERRORS):
            await self._connection.close()

    async def _work_queue(self, model: str) -> AbstractQueue:
        queue = self._queues.get(model)
        if queue is None:
            try:
                queue = await declare_work_queue(self._channel, self.topology, model)
            except _CONNECTION_ERRORS as exc:
                raise describe_refusal(exc, f"the queue of model {model!r}") from None
            self._queues[model] = queue
        return queue

    async def _delay_queue(self, delay_ms: int) -> AbstractQueue:
        queue = self._delay_queues.get(delay_ms)
        if queue is None:
            name = self.topology.delay_queue(delay_ms)
            try:
                queue = await self._channel.declare_queue(
                    name, durable=True, arguments=self.topology.delay_queue_arguments(delay_ms)
                )
                await queue.bind(
                    self._exchanges.delay,
                    routing_key="",
                    arguments={"x-match": "all", DELAY_HEADER: str(delay_ms)},
                )
            except _CONNECTION_ERRORS as exc:
                raise describe_refusal(exc, f"queue {name!r}") from None
            self._delay_queues[delay_ms] = queue
        return queue
