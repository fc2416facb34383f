"""The dead-letter queue for operators: what died, why, and putting it back to work.

Browsing takes messages with basic.get and never acks them, so closing the channel hands them
all back; re-queueing publishes a fresh copy to the work exchange (confirmed), then acks the
dead one. A copy that goes out twice is harmless: the job store fences every attempt.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from core.adapters.rabbitmq import (
    PUBLISH_TIMEOUT_SECONDS,
    BrokerUnavailable,
    Exchanges,
    Topology,
    connect,
    declare_dead_queue,
    declare_exchanges,
    declare_work_queue,
    decode_job_message,
    encode_job_message,
)
from core.ports import JobMessage

log = logging.getLogger(__name__)

# A browse looks at no more than this many messages, so a huge queue cannot exhaust memory.
SCAN_LIMIT = 10_000
GET_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered job message and its latest death: `reason` is RabbitMQ's
    (`delivery_limit`, `rejected`, `expired`, ...), `queue` the queue it died in."""

    job_id: str
    model: str
    reason: str
    queue: str
    time: datetime | None
    deaths: int


def _dead_letter(incoming: AbstractIncomingMessage, message: JobMessage) -> DeadLetter:
    headers: dict[str, Any] = dict(incoming.headers or {})
    deaths = [d for d in headers.get("x-death", ()) if isinstance(d, dict)]
    # RabbitMQ puts the latest death first: the one that brought the message here (an earlier
    # one may be its expiry from a delay queue).
    latest = deaths[0] if deaths else {}
    time = latest.get("time")
    return DeadLetter(
        job_id=message.job_id,
        model=message.model,
        reason=str(latest.get("reason") or headers.get("x-first-death-reason") or "unknown"),
        queue=str(latest.get("queue") or headers.get("x-first-death-queue") or "unknown"),
        time=time if isinstance(time, datetime) else None,
        deaths=sum(int(d.get("count", 1)) for d in deaths),
    )


@dataclass
class _Browsed:
    incoming: AbstractIncomingMessage
    message: JobMessage
    letter: DeadLetter


class DeadLetters:
    """The dead-letter queue of one topology; open with `DeadLetters.open`."""

    def __init__(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        self._connection = connection
        self._topology = topology

    @classmethod
    async def open(cls, url: str, *, topology: Topology | None = None) -> DeadLetters:
        return cls(await connect(url, "jobgate dlq"), topology or Topology())

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        """Up to `limit` dead letters, oldest first."""
        async with self._browse(limit) as (_, _exchanges, browsed):
            return [b.letter for b in browsed]

    async def find(self, job_id: str) -> DeadLetter | None:
        async with self._browse(SCAN_LIMIT) as (_, _exchanges, browsed):
            return next((b.letter for b in browsed if b.message.job_id == job_id), None)

    async def requeue(self, job_ids: Collection[str] | None) -> list[str]:
        """Puts the dead letters of `job_ids` (all of them when None) back on their work queues;
        returns the job ids re-queued."""
        wanted = None if job_ids is None else set(job_ids)
        requeued: list[str] = []
        async with self._browse(SCAN_LIMIT) as (channel, exchanges, browsed):
            for item in browsed:
                if wanted is not None and item.message.job_id not in wanted:
                    continue
                await declare_work_queue(channel, self._topology, item.message.model)
                await exchanges.work.publish(
                    encode_job_message(item.message),
                    routing_key=item.message.model,
                    mandatory=True,
                    timeout=PUBLISH_TIMEOUT_SECONDS,
                )
                await item.incoming.ack()
                requeued.append(item.message.job_id)
        return requeued

    async def close(self) -> None:
        with suppress(aiormq.exceptions.AMQPError, ConnectionError):
            await self._connection.close()

    @asynccontextmanager
    async def _browse(
        self, limit: int
    ) -> AsyncIterator[tuple[AbstractChannel, Exchanges, list[_Browsed]]]:
        """Takes up to `limit` messages off the queue without acking them; closing the channel
        at the end hands back whatever was not acked meanwhile."""
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            exchanges = await declare_exchanges(channel, self._topology)
            queue = await declare_dead_queue(channel, self._topology)
            browsed: list[_Browsed] = []
            while len(browsed) < limit:
                incoming = await queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT_SECONDS)
                if incoming is None:
                    break
                try:
                    message = decode_job_message(incoming.body)
                except ValueError:
                    log.warning("skipped a dead letter that is not a job message")
                    continue
                browsed.append(_Browsed(incoming, message, _dead_letter(incoming, message)))
            yield channel, exchanges, browsed
        except (aiormq.exceptions.AMQPError, ConnectionError) as exc:
            raise BrokerUnavailable(f"reading the dead-letter queue failed: {exc!r}") from None
        finally:
            with suppress(aiormq.exceptions.AMQPError, ConnectionError):
                await channel.close()
