"""The async iterator both brokers hand their consumers: it waits on the consumer's wake-up
event for its next delivery, and ends when the consumer or its broker closes."""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar

D = TypeVar("D", covariant=True)


class _Closable(Protocol):
    closed: bool


class Consumer(Protocol[D]):
    closed: bool
    wake: asyncio.Event

    @property
    def broker(self) -> _Closable: ...

    def take(self) -> D | None:
        """The next delivery this consumer may hand out now, if any."""


class Deliveries(Generic[D]):
    """Several tasks may await one at once."""

    def __init__(self, consumer: Consumer[D]) -> None:
        self._consumer = consumer

    def __aiter__(self) -> Deliveries[D]:
        return self

    async def __anext__(self) -> D:
        consumer = self._consumer
        while True:
            if consumer.closed or consumer.broker.closed:
                raise StopAsyncIteration
            delivery = consumer.take()
            if delivery is not None:
                return delivery
            consumer.wake.clear()
            await consumer.wake.wait()
