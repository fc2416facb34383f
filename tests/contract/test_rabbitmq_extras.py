"""What the RabbitMQ adapters promise beyond the port contracts: durable persistent messages,
unroutable publishes that fail, consumers that survive the broker dropping them, retries through
delay queues, and a dead-letter queue that takes poison and gives it back."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

from core.adapters.dead_letters import DeadLetters
from core.adapters.rabbitmq import QueueType, RabbitError, Topology, Unroutable
from core.adapters.rabbitmq_broker import RabbitBroker
from core.adapters.rabbitmq_events import CANCELS, RabbitEventBus
from core.backends import Backends, open_backends
from core.errors import ConfigError, Reason
from core.jobs import JobError, JobEvent, JobState, LogLine, Progress, StateChanged
from core.ports import Delivery, JobMessage
from core.providers.base import RunContext
from core.providers.local import LocalProvider
from core.providers.registry import ProviderRegistry
from core.settings import Settings
from tests.fixtures.rabbitmq import TEST_MAX_ATTEMPTS, RabbitRun
from tests.workers.helpers import FunctionProvider, stored_events, submit, wait_for_end
from workers.retry import RetryPolicy
from workers.runtime import Worker

WAIT_SECONDS = 10.0
MODEL = "test/echo"


async def next_delivery(deliveries: AsyncIterator[Delivery]) -> Delivery:
    return await asyncio.wait_for(anext(deliveries), WAIT_SECONDS)


@pytest.fixture
async def open_broker(
    rabbitmq_url: str, rabbitmq_topology: Topology
) -> AsyncIterator[Callable[..., Awaitable[RabbitBroker]]]:
    opened: list[RabbitBroker] = []

    async def open_one(**changes: object) -> RabbitBroker:
        broker = await RabbitBroker.open(
            rabbitmq_url, topology=replace(rabbitmq_topology, **changes)
        )
        opened.append(broker)
        return broker

    yield open_one
    for broker in opened:
        await broker.close()


@pytest.fixture
async def broker(open_broker: Callable[..., Awaitable[RabbitBroker]]) -> RabbitBroker:
    return await open_broker()


@pytest.fixture
async def dead_letters(
    rabbitmq_url: str, rabbitmq_topology: Topology
) -> AsyncIterator[DeadLetters]:
    letters = await DeadLetters.open(rabbitmq_url, topology=rabbitmq_topology)
    yield letters
    await letters.close()


@pytest.fixture
async def raw_channel(rabbitmq_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain channel to look at the broker from outside the adapters."""
    connection = await aio_pika.connect(rabbitmq_url)
    yield await connection.channel()
    await connection.close()


async def test_job_messages_are_persistent_json_references_named_by_the_job_id(
    broker: RabbitBroker, raw_channel: aio_pika.abc.AbstractChannel
) -> None:
    await broker.publish(JobMessage(job_id="job-1", model=MODEL))

    queue = await raw_channel.declare_queue(broker.topology.work_queue(MODEL), passive=True)
    message = await queue.get(timeout=WAIT_SECONDS)

    assert message.delivery_mode is aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == "job-1"
    assert json.loads(message.body) == {"job_id": "job-1", "model": MODEL}
    await message.ack()


async def test_work_queues_are_durable_quorum_queues_and_a_mismatch_is_a_clear_error(
    broker: RabbitBroker, open_broker: Callable[..., Awaitable[RabbitBroker]]
) -> None:
    await broker.publish(JobMessage(job_id="job-1", model=MODEL))

    # The broker refuses to redeclare a queue with other arguments: proof of what it is.
    with pytest.raises(RabbitError, match="JOBGATE_RABBITMQ_QUEUE_TYPE"):
        await (await open_broker(queue_type=QueueType.CLASSIC)).publish(
            JobMessage(job_id="job-2", model=MODEL)
        )
    same = await open_broker()
    await same.publish(JobMessage(job_id="job-3", model=MODEL))


async def test_a_publish_that_no_queue_takes_raises(
    broker: RabbitBroker, raw_channel: aio_pika.abc.AbstractChannel
) -> None:
    await broker.publish(JobMessage(job_id="job-1", model=MODEL))
    await raw_channel.queue_delete(broker.topology.work_queue(MODEL))

    with pytest.raises(Unroutable, match="job-2"):
        await broker.publish(JobMessage(job_id="job-2", model=MODEL))


async def test_the_consumer_is_restored_after_the_broker_drops_the_connection(
    broker: RabbitBroker, rabbitmq_run: RabbitRun
) -> None:
    await broker.publish(JobMessage(job_id="before", model=MODEL))
    async with broker.consume([MODEL], prefetch=2) as deliveries:
        held = await next_delivery(deliveries)

        await asyncio.to_thread(rabbitmq_run.close_connections)
        await publish_when_reconnected(broker, JobMessage(job_id="after", model=MODEL))
        await held.ack()  # its channel is gone: no error, the broker delivers it again

        got = {(await next_delivery(deliveries)).message.job_id for _ in range(2)}

    assert got == {"before", "after"}


async def publish_when_reconnected(broker: RabbitBroker, message: JobMessage) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            try:
                await broker.publish(message)
                return
            except RabbitError:
                await asyncio.sleep(0.1)


async def test_messages_a_consumer_never_handed_out_go_back_as_fresh_ones(
    broker: RabbitBroker,
) -> None:
    await broker.publish(JobMessage(job_id="a1", model="test/a"))
    await broker.publish(JobMessage(job_id="b1", model="test/b"))
    async with broker.consume(["test/a", "test/b"], prefetch=1) as deliveries:
        handed_out = await next_delivery(deliveries)
        await asyncio.sleep(0.3)  # the broker pushes the other model's message meanwhile

    async with broker.consume(["test/a", "test/b"], prefetch=2) as deliveries:
        again = [await next_delivery(deliveries) for _ in range(2)]

    other = ({"a1", "b1"} - {handed_out.message.job_id}).pop()
    flags = {d.message.job_id: d.redelivered for d in again}
    assert flags == {handed_out.message.job_id: True, other: False}


async def test_a_message_that_keeps_crashing_its_workers_is_dead_lettered_and_blocks_nothing(
    broker: RabbitBroker, dead_letters: DeadLetters
) -> None:
    await broker.publish(JobMessage(job_id="poison", model=MODEL))
    await broker.publish(JobMessage(job_id="fine", model=MODEL))

    for _ in range(TEST_MAX_ATTEMPTS):
        # A worker that dies mid-job: its deliveries go back unacked when its channel closes.
        async with broker.consume([MODEL], prefetch=1) as deliveries:
            assert (await next_delivery(deliveries)).message.job_id == "poison"

    async with broker.consume([MODEL], prefetch=1) as deliveries:
        fine = await next_delivery(deliveries)
        await fine.ack()

    assert fine.message.job_id == "fine"
    [letter] = await dead_letters.list()
    assert (letter.job_id, letter.model, letter.reason) == ("poison", MODEL, "delivery_limit")
    assert letter.queue == broker.topology.work_queue(MODEL)


async def test_a_dead_letter_can_be_found_and_requeued_to_its_work_queue(
    broker: RabbitBroker, dead_letters: DeadLetters
) -> None:
    for job_id in ("dead-1", "dead-2"):
        await broker.publish(JobMessage(job_id=job_id, model=MODEL))
    async with broker.consume([MODEL], prefetch=2) as deliveries:
        for _ in range(2):
            await (await next_delivery(deliveries)).reject(requeue=False)

    assert {letter.job_id for letter in await dead_letters.list()} == {"dead-1", "dead-2"}
    found = await dead_letters.find("dead-2")
    assert found is not None and found.reason == "rejected"
    assert await dead_letters.find("missing") is None

    assert await dead_letters.requeue(["dead-2"]) == ["dead-2"]

    assert [letter.job_id for letter in await dead_letters.list()] == ["dead-1"]
    async with broker.consume([MODEL], prefetch=1) as deliveries:
        back = await next_delivery(deliveries)
        await back.ack()
    assert (back.message.job_id, back.redelivered) == ("dead-2", False)
    assert await dead_letters.requeue(None) == ["dead-1"]
    assert await dead_letters.list() == []


@pytest.fixture
async def rabbit_backends(
    tmp_path: Path, rabbitmq_url: str, rabbitmq_topology: Topology
) -> AsyncIterator[Backends]:
    settings = Settings(
        data_dir=tmp_path / "data",
        blob_http_listen="127.0.0.1:0",
        broker_url=rabbitmq_url,
        rabbitmq_prefix=rabbitmq_topology.prefix,
        max_attempts=TEST_MAX_ATTEMPTS,
    )
    settings.data_dir.mkdir(parents=True)
    backends = await open_backends(
        settings, ProviderRegistry([LocalProvider()]).catalog, serves_api=False
    )
    yield backends
    await backends.close()


@pytest.fixture
async def run_worker(rabbit_backends: Backends) -> AsyncIterator[Callable[..., Worker]]:
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(*providers: FunctionProvider) -> Worker:
        registry = ProviderRegistry([LocalProvider(), *providers])
        retry = RetryPolicy(max_attempts=TEST_MAX_ATTEMPTS, base_seconds=0.2)
        models = [spec.id for provider in providers for spec in provider.models]
        worker = Worker(rabbit_backends, registry, concurrency=4, models=models, retry=retry)
        running.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, task in running:
        await worker.stop(0)
        await task


async def test_a_job_whose_provider_fails_once_is_retried_after_a_backoff(
    rabbit_backends: Backends, run_worker: Callable[..., Worker]
) -> None:
    calls: list[float] = []

    async def flaky(ctx: RunContext) -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            raise ConnectionResetError("the provider's API hung up")
        await ctx.output_text("answer", "ok")

    run_worker(FunctionProvider("test/flaky", flaky))
    job = await submit(rabbit_backends, "test/flaky")

    done = await wait_for_end(rabbit_backends, job.id)

    assert (done.state, done.attempt) == (JobState.SUCCEEDED, 2)
    assert calls[1] - calls[0] >= 0.1  # half the 0.2 s ceiling at least, with jitter
    logs = [
        e.payload.message
        for e in await stored_events(rabbit_backends, job.id)
        if isinstance(e.payload, LogLine)
    ]
    assert any(
        line.startswith("attempt 1 failed: ConnectionResetError; retrying in") for line in logs
    )


async def test_a_job_that_keeps_failing_gives_up_after_max_attempts(
    rabbit_backends: Backends, run_worker: Callable[..., Worker]
) -> None:
    async def broken(ctx: RunContext) -> None:
        raise ZeroDivisionError("oops")

    run_worker(FunctionProvider("test/broken", broken))
    job = await submit(rabbit_backends, "test/broken")

    done = await wait_for_end(rabbit_backends, job.id)

    assert done.attempt == TEST_MAX_ATTEMPTS
    assert done.error == JobError(
        Reason.PROVIDER_ERROR,
        f"gave up after {TEST_MAX_ATTEMPTS} attempts: the provider failed: ZeroDivisionError",
    )


async def test_an_event_published_on_one_server_reaches_watchers_on_another_in_order(
    rabbitmq_url: str, rabbitmq_topology: Topology
) -> None:
    one = await RabbitEventBus.open(rabbitmq_url, topology=rabbitmq_topology)
    two = await RabbitEventBus.open(rabbitmq_url, topology=rabbitmq_topology)
    job_id = uuid.uuid4().hex
    sent = [
        JobEvent(job_id, n, datetime.now(UTC), 1, Progress(n / 100, f"step {n}"))
        for n in range(1, 51)
    ]
    try:
        async with (
            two.subscribe(job_id) as first,
            two.subscribe(job_id) as second,
            two.subscribe("another-job") as other,
        ):
            for event in sent:
                await one.publish(event)

            for watcher in (first, second):
                got = [await asyncio.wait_for(anext(watcher), WAIT_SECONDS) for _ in sent]
                assert got == sent
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(other), 0.1)
    finally:
        await one.close()
        await two.close()


async def test_a_burst_of_events_travels_in_few_messages_with_each_cancel_alone(
    rabbitmq_url: str, rabbitmq_topology: Topology, raw_channel: aio_pika.abc.AbstractChannel
) -> None:
    bus = await RabbitEventBus.open(rabbitmq_url, topology=rabbitmq_topology)
    tap = await raw_channel.declare_queue(exclusive=True)
    await tap.bind(rabbitmq_topology.events_exchange, routing_key="#")
    job_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    sent = [JobEvent(job_id, n, now, 1, Progress(n / 1000)) for n in range(1, 300)]
    cancel = JobEvent(job_id, 300, now, 1, StateChanged(JobState.CANCELLED))
    try:
        for event in [*sent[:150], cancel, *sent[150:]]:
            await bus.publish(event)

        messages = []
        async with tap.iterator(no_ack=True) as arriving:
            while sum(len(json.loads(m.body)) for m in messages) < 300:
                messages.append(await asyncio.wait_for(anext(arriving), WAIT_SECONDS))
    finally:
        await bus.close()

    sequences = [item["sequence"] for m in messages for item in json.loads(m.body)]
    cancels = [m for m in messages if m.routing_key == f"{job_id}.cancel"]
    assert sequences == [*range(1, 151), 300, *range(151, 300)]
    assert len(messages) < 10
    assert len(cancels) == 1 and len(json.loads(cancels[0].body)) == 1


async def test_a_worker_bus_gets_other_processes_cancels_and_nothing_else(
    rabbitmq_url: str, rabbitmq_topology: Topology
) -> None:
    server = await RabbitEventBus.open(rabbitmq_url, topology=rabbitmq_topology)
    worker = await RabbitEventBus.open(rabbitmq_url, topology=rabbitmq_topology, interest=CANCELS)
    job_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    progress = JobEvent(job_id, 3, now, 1, Progress(0.5))
    running = JobEvent(job_id, 2, now, 1, StateChanged(JobState.RUNNING))
    cancel = JobEvent(
        job_id, 4, now, 1, StateChanged(JobState.CANCELLED, JobError(Reason.CANCELLED, "bye"))
    )
    try:
        async with worker.subscribe(job_id) as events:
            for event in (running, progress, cancel):
                await server.publish(event)

            assert await asyncio.wait_for(anext(events), WAIT_SECONDS) == cancel
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(events), 0.2)
    finally:
        await server.close()
        await worker.close()


async def test_an_unreachable_broker_is_one_clear_line_naming_what_to_start(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        blob_http_listen="127.0.0.1:0",
        broker_url="amqp://guest:s3cret@127.0.0.1:1/",
    )
    with pytest.raises(ConfigError) as raised:
        await open_backends(settings, ProviderRegistry([LocalProvider()]).catalog, serves_api=False)

    message = raised.value.message
    assert message.startswith("JOBGATE_BROKER_URL")
    assert "docker compose up -d rabbitmq" in message
    assert "s3cret" not in message and "\n" not in message
