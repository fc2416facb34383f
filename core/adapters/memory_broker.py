"""The Broker in process memory: one queue per model, competing consumers, at-least-once.

It behaves like the RabbitMQ adapter where the ports care: a delivery stays unacked until
ack/reject, at most `prefetch` per consumer; a rejected-with-requeue or abandoned delivery goes
back to the head of its queue marked redelivered. Nothing survives the process: on restart the
server re-publishes the job store's unfinished jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass

from core.adapters.deliveries import Deliveries
from core.ports import JobMessage

log = logging.getLogger(__name__)


class BrokerClosed(RuntimeError):
    """The broker, or the consumer a delivery came from, is closed."""


@dataclass(frozen=True, slots=True)
class _Envelope:
    message: JobMessage
    redelivered: bool = False


class MemoryDelivery:
    """One message handed to one consumer; settle it exactly once with ack() or reject()."""

    def __init__(self, consumer: _Consumer, envelope: _Envelope) -> None:
        self.message = envelope.message
        self.redelivered = envelope.redelivered
        self._consumer = consumer
        self._envelope = envelope
        self._settled = False

    async def ack(self) -> None:
        self._settle("ack")

    async def reject(self, *, requeue: bool) -> None:
        self._settle("reject")
        if requeue:
            self._consumer.broker._push(self._envelope.message, redelivered=True, head=True)
        else:
            log.warning(
                "dropped job %s (model %s): rejected without requeue",
                self.message.job_id,
                self.message.model,
            )

    def _settle(self, action: str) -> None:
        if self._settled:
            raise BrokerClosed(f"cannot {action} job {self.message.job_id}: already settled")
        if self._consumer.broker.closed:
            raise BrokerClosed(f"cannot {action} job {self.message.job_id}: the broker is closed")
        if self._consumer.closed:
            raise BrokerClosed(
                f"cannot {action} job {self.message.job_id}: its consumer is closed"
                " and the message went back to the queue"
            )
        self._settled = True
        self._consumer.unacked.pop(id(self), None)
        self._consumer.wake.set()


class _Consumer:
    """One consume() context: its models, its unacked deliveries, its wake-up signal."""

    def __init__(self, broker: MemoryBroker, models: tuple[str, ...] | None, prefetch: int) -> None:
        self.broker = broker
        self.models = models
        self.prefetch = prefetch
        self.unacked: dict[int, MemoryDelivery] = {}
        self.wake = asyncio.Event()
        self.closed = False
        self._next = 0  # round-robin position among this consumer's queues

    def wants(self, model: str) -> bool:
        return self.models is None or model in self.models

    def take(self) -> MemoryDelivery | None:
        if len(self.unacked) >= self.prefetch:
            return None
        names = self.models if self.models is not None else tuple(self.broker.queues)
        for step in range(len(names)):
            index = (self._next + step) % len(names)
            queue = self.broker.queues.get(names[index])
            if queue:
                self._next = index + 1
                delivery = MemoryDelivery(self, queue.popleft())
                self.unacked[id(delivery)] = delivery
                return delivery
        return None


class MemoryBroker:
    """Per-model FIFO queues in memory; see core.ports.Broker for the semantics."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[_Envelope]] = {}
        self.closed = False
        self._consumers: list[_Consumer] = []
        self._delayed: dict[int, asyncio.TimerHandle] = {}  # messages waiting out a delay
        self._delay_count = 0

    async def publish(self, message: JobMessage, *, delay: float = 0.0) -> None:
        if self.closed:
            raise BrokerClosed(f"cannot publish job {message.job_id}: the broker is closed")
        if delay > 0:
            self._delay_count += 1
            key = self._delay_count
            self._delayed[key] = asyncio.get_running_loop().call_later(
                delay, self._push_delayed, key, message
            )
            return
        self._push(message, redelivered=False, head=False)

    @asynccontextmanager
    async def consume(
        self, models: Collection[str] | None, prefetch: int
    ) -> AsyncIterator[AsyncIterator[MemoryDelivery]]:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, not {prefetch}")
        if models is not None and not models:
            raise ValueError("models is empty: pass None to consume every model")
        consumer = _Consumer(self, tuple(dict.fromkeys(models)) if models else None, prefetch)
        self._consumers.append(consumer)
        try:
            yield Deliveries(consumer)
        finally:
            self._leave(consumer)

    async def close(self) -> None:
        self.closed = True
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        for consumer in self._consumers:
            consumer.wake.set()

    def queued(self, model: str) -> int:
        """How many messages wait in `model`'s queue (unacked ones not counted)."""
        return len(self.queues.get(model, ()))

    def _push_delayed(self, key: int, message: JobMessage) -> None:
        del self._delayed[key]
        self._push(message, redelivered=False, head=False)

    def _push(self, message: JobMessage, *, redelivered: bool, head: bool) -> None:
        queue = self.queues.setdefault(message.model, deque())
        envelope = _Envelope(message, redelivered)
        if head:
            queue.appendleft(envelope)
        else:
            queue.append(envelope)
        for consumer in self._consumers:
            if consumer.wants(message.model):
                consumer.wake.set()

    def _leave(self, consumer: _Consumer) -> None:
        consumer.closed = True
        consumer.wake.set()
        self._consumers.remove(consumer)
        if self.closed:
            return
        # Newest first onto the head, so the queue keeps their original order.
        for delivery in reversed(list(consumer.unacked.values())):
            self._push(delivery.message, redelivered=True, head=True)
        consumer.unacked.clear()
