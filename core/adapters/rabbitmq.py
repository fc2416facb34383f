"""What the RabbitMQ adapters share: the connection, the topology's names and arguments, the
errors, and the message encoding.

The topology, every name under one prefix (`jobgate` unless configured):
- `{p}.jobs`, a direct exchange routing by model id to one durable work queue per model,
  `{p}.jobs.{model}`;
- `{p}.delay`, a headers exchange feeding the delay queues `{p}.delay.{ms}`: each holds messages
  for its TTL, then dead-letters them back to `{p}.jobs` under their model routing key;
- `{p}.dead`, a fanout exchange into the dead-letter queue `{p}.dead`: work queues dead-letter
  there what was delivered too often (a message that keeps crashing workers) or rejected;
- `{p}.events`, a topic exchange carrying job events, routed by job id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)

from core.ports import JobMessage

CONNECT_TIMEOUT_SECONDS = 10.0
# Between reconnect attempts after the connection dropped (aio-pika's default is 5 s).
RECONNECT_INTERVAL_SECONDS = 1.0
# How long a publish waits for the broker's confirm before it counts as failed: aio-pika can
# wait forever for a broker that went away (aio-pika #508, #636).
PUBLISH_TIMEOUT_SECONDS = 10.0
DEFAULT_PREFIX = "jobgate"
DEFAULT_MAX_ATTEMPTS = 5
JOB_MESSAGE_TYPE = "jobgate.job"
DELAY_HEADER = "x-jobgate-delay-ms"
# Delays are rounded up to quarter octaves (steps of 19%) between these bounds, so a handful of
# delay queues serve every backoff a retry policy with jitter asks for.
MIN_DELAY_MS = 50
MAX_DELAY_MS = 6 * 3600 * 1000
START_HINT = "start it with `docker compose up -d rabbitmq` or the local rabbitmq-server service"


class RabbitError(RuntimeError):
    """The root of the RabbitMQ adapters' errors."""


class BrokerUnavailable(RabbitError):
    """The broker could not be reached or did not confirm in time."""


class Unroutable(RabbitError):
    """The broker returned a publish: no queue is bound for its routing key."""


class QueueType(StrEnum):
    QUORUM = "quorum"
    CLASSIC = "classic"


@dataclass(frozen=True)
class Topology:
    """Names and arguments of every exchange and queue, all under `prefix`.

    Quorum work queues dead-letter a message after `max_attempts` deliveries; classic queues
    have no delivery limit, so there only the workers' attempt count bounds retries.
    """

    prefix: str = DEFAULT_PREFIX
    queue_type: QueueType = QueueType.QUORUM
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def __post_init__(self) -> None:
        if not self.prefix:
            raise ValueError("the topology prefix must not be empty")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")

    @property
    def work_exchange(self) -> str:
        return f"{self.prefix}.jobs"

    @property
    def delay_exchange(self) -> str:
        return f"{self.prefix}.delay"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.events"

    def work_queue(self, model: str) -> str:
        return f"{self.prefix}.jobs.{model}"

    def delay_queue(self, delay_ms: int) -> str:
        return f"{self.prefix}.delay.{delay_ms}"

    def work_queue_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-queue-type": self.queue_type.value,
            "x-dead-letter-exchange": self.dead_exchange,
        }
        if self.queue_type is QueueType.QUORUM:
            arguments |= _AT_LEAST_ONCE_DEAD_LETTERS
            # A message is dead-lettered after limit + 1 deliveries: one per allowed attempt.
            arguments["x-delivery-limit"] = self.max_attempts - 1
        return arguments

    def delay_queue_arguments(self, delay_ms: int) -> dict[str, Any]:
        # No x-dead-letter-routing-key: an expired message keeps its model routing key.
        arguments: dict[str, Any] = {
            "x-queue-type": self.queue_type.value,
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": self.work_exchange,
        }
        if self.queue_type is QueueType.QUORUM:
            arguments |= _AT_LEAST_ONCE_DEAD_LETTERS
        return arguments

    def dead_queue_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": self.queue_type.value}


# Quorum queues dead-letter at most once unless told otherwise; at-least-once needs the
# reject-publish overflow (RabbitMQ 3.10 refuses the strategy without it).
_AT_LEAST_ONCE_DEAD_LETTERS = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def delay_bucket_ms(delay: float) -> int:
    """`delay` seconds rounded up to the next quarter octave, in milliseconds."""
    wanted = max(delay * 1000, MIN_DELAY_MS)
    step = math.ceil(4 * math.log2(wanted / 1000) - 1e-9)
    return min(round(1000 * 2 ** (step / 4)), MAX_DELAY_MS)


def redact(url: str) -> str:
    """`url` with its password hidden, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def connect(url: str, name: str) -> AbstractRobustConnection:
    """A connection that reconnects by itself and restores its channels, queues and consumers.

    Raises BrokerUnavailable, saying what to start, when the first connection fails.
    """
    # aiormq logs a failed first connect as an error of its own; the error raised here says it
    # once, with what to do about it. Later reconnect failures are still logged.
    transport_log = logging.getLogger("aiormq.connection")
    transport_log.addFilter(_hide_connect_failure)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            return await aio_pika.connect_robust(
                url,
                client_properties={"connection_name": name},
                reconnect_interval=RECONNECT_INTERVAL_SECONDS,
            )
    except TimeoutError:
        raise BrokerUnavailable(
            f"RabbitMQ at {redact(url)} did not answer within {CONNECT_TIMEOUT_SECONDS:g} s; "
            + START_HINT
        ) from None
    except aiormq.exceptions.ProbableAuthenticationError:
        raise BrokerUnavailable(
            f"RabbitMQ at {redact(url)} refused the credentials or the virtual host"
        ) from None
    except (OSError, aiormq.exceptions.AMQPError) as exc:
        raise BrokerUnavailable(
            f"cannot connect to RabbitMQ at {redact(url)} ({type(exc).__name__}: {exc}); "
            + START_HINT
        ) from None
    finally:
        transport_log.removeFilter(_hide_connect_failure)


def _hide_connect_failure(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("error when creating transport")


def describe_refusal(exc: BaseException, what: str) -> RabbitError:
    """A clear error for a declaration the broker refused, e.g. a queue that exists with other
    arguments (a classic queue where a quorum one is asked for)."""
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        return RabbitError(
            f"RabbitMQ refused to declare {what}: {exc}. It exists with other settings: delete it "
            "or configure jobgate to match (JOBGATE_RABBITMQ_QUEUE_TYPE, JOBGATE_MAX_ATTEMPTS)"
        )
    return BrokerUnavailable(f"RabbitMQ failed while declaring {what}: {exc!r}")


def encode_job_message(
    message: JobMessage, headers: dict[str, Any] | None = None
) -> aio_pika.Message:
    """A persistent AMQP message carrying the job reference; its message id is the job id."""
    body = json.dumps({"job_id": message.job_id, "model": message.model}).encode()
    return aio_pika.Message(
        body,
        message_id=message.job_id,
        content_type="application/json",
        type=JOB_MESSAGE_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers or {},
    )


def decode_job_message(body: bytes) -> JobMessage:
    """Raises ValueError for a body that is not a job message."""
    try:
        data = json.loads(body)
        return JobMessage(job_id=str(data["job_id"]), model=str(data["model"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a job message: {body[:200]!r}") from exc


@dataclass(frozen=True)
class Exchanges:
    """The work path's exchanges as declared on one channel."""

    work: AbstractExchange
    delay: AbstractExchange
    dead: AbstractExchange


async def declare_exchanges(channel: AbstractChannel, topology: Topology) -> Exchanges:
    """Declares (idempotently) the work, delay and dead-letter exchanges and the dead-letter
    queue, so a dead-lettered message always has somewhere to go."""
    what = f"the exchanges and queue under {topology.prefix!r}"
    try:
        exchanges = Exchanges(
            work=await channel.declare_exchange(topology.work_exchange, "direct", durable=True),
            delay=await channel.declare_exchange(topology.delay_exchange, "headers", durable=True),
            dead=await channel.declare_exchange(topology.dead_exchange, "fanout", durable=True),
        )
        await declare_dead_queue(channel, topology)
    except aiormq.exceptions.AMQPError as exc:
        raise describe_refusal(exc, what) from None
    return exchanges


async def declare_dead_queue(channel: AbstractChannel, topology: Topology) -> AbstractQueue:
    queue = await channel.declare_queue(
        topology.dead_queue, durable=True, arguments=topology.dead_queue_arguments()
    )
    await queue.bind(topology.dead_exchange, routing_key="")
    return queue


async def declare_work_queue(
    channel: AbstractChannel, topology: Topology, model: str
) -> AbstractQueue:
    name = topology.work_queue(model)
    try:
        queue = await channel.declare_queue(
            name, durable=True, arguments=topology.work_queue_arguments()
        )
        await queue.bind(topology.work_exchange, routing_key=model)
    except aiormq.exceptions.AMQPError as exc:
        raise describe_refusal(exc, f"queue {name!r}") from None
    return queue
