"""The Broker contract: routing, prefetch, acks and redelivery, run against every broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from core.ports import Broker, Delivery, JobMessage

# How long a test waits to be sure a delivery is NOT coming.
QUIET_SECONDS = 0.1
WAIT_SECONDS = 5.0


async def next_delivery(deliveries: AsyncIterator[Delivery]) -> Delivery:
    return await asyncio.wait_for(anext(deliveries), WAIT_SECONDS)


async def take(deliveries: AsyncIterator[Delivery], count: int) -> list[Delivery]:
    return [await next_delivery(deliveries) for _ in range(count)]


async def assert_nothing_comes(deliveries: AsyncIterator[Delivery]) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(deliveries), QUIET_SECONDS)


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.message.job_id for d in deliveries]


async def publish(broker: Broker, model: str, *job_ids: str) -> None:
    for job_id in job_ids:
        await broker.publish(JobMessage(job_id=job_id, model=model))


async def test_a_consumer_gets_only_the_models_it_asked_for(
    broker: Broker, model_name: Callable[[str], str]
) -> None:
    echo, sleep = model_name("echo"), model_name("sleep")
    await publish(broker, sleep, "s1")
    await publish(broker, echo, "e1", "e2")

    async with broker.consume([echo], prefetch=10) as deliveries:
        got = await take(deliveries, 2)
        await assert_nothing_comes(deliveries)

    assert ids(got) == ["e1", "e2"]
    assert all(not d.redelivered for d in got)
    assert [d.message.model for d in got] == [echo, echo]


async def test_a_consumer_of_every_model_gets_them_all(
    broker: Broker, model_name: Callable[[str], str]
) -> None:
    await publish(broker, model_name("a"), "a1")
    await publish(broker, model_name("b"), "b1")

    async with broker.consume(None, prefetch=10) as deliveries:
        got = await take(deliveries, 2)

    assert sorted(ids(got)) == ["a1", "b1"]


async def test_a_consumer_takes_turns_between_its_queues(
    broker: Broker, model_name: Callable[[str], str]
) -> None:
    a, b = model_name("a"), model_name("b")
    await publish(broker, a, "a1", "a2", "a3")
    await publish(broker, b, "b1", "b2", "b3")

    async with broker.consume([a, b], prefetch=10) as deliveries:
        got = ids(await take(deliveries, 6))

    assert got[:4] in (["a1", "b1", "a2", "b2"], ["b1", "a1", "b2", "a2"])


async def test_a_consumer_waits_for_messages_published_later(
    broker: Broker, model_name: Callable[[str], str]
) -> None:
    model = model_name("echo")
    async with broker.consume([model], prefetch=1) as deliveries:
        waiting = asyncio.create_task(next_delivery(deliveries))
        await asyncio.sleep(0)
        await publish(broker, model, "late")

        assert (await waiting).message.job_id == "late"


async def test_no_more_than_prefetch_deliveries_are_unacked(
    broker: Broker, model_name: Callable[[str], str]
) -> None:
    model = model_name("echo")
    await publish(broker, model, "j1", "j2", "j3", "j4")

    async with broker.consume([model], prefetch=2) as deliveries:
        first = await take(deliveries, 2)
        await assert_nothing_comes(deliveries)
        await first[0].ack()
        third = await next_delivery(deliveries)
        await assert_nothing_comes(deliveries)

    assert ids([*first, third]) == ["j1", "j2", "j3"]


async def test_an_acked_message_is_gone(broker: Broker, model_name: Callable[[str], str]) -> None:
    model = model_name("echo")
    await publish(broker, model, "j1")
    async with broker.consume([model], prefetch=1) as deliveries:
        await (await next_delivery(deliveries)).ack()

    async with broker.consume([model], prefetch=1) as deliveries:
        await assert_nothing_comes(deliveries)


async def test_a_rejected_message_with_requeue_comes_back_redelivered(
    broker: Broker, model_name: Callable[[str], str]
) -> None:
    model = model_name("echo")
    await publish(broker, model, "j1")

    async with broker.consume([model], prefetch=1) as deliveries:
        await (await next_delivery(deliveries)).reject(requeue=True)
        again = await next_delivery(deliveries)

    assert (again.message.job_id, again.redelivered) == ("j1", True)


async def test_a_rejected_message_without_requeue_is_dropped(
    broker: Broker, model_name: Callable[[str], str]
) -> None:
    model = model_name("echo")
    await publish(broker, model, "poison", "fine")

    async with broker.consume([model], prefetch=1) as deliveries:
        await (await next_delivery(deliveries)).reject(requeue=False)
        nxt = await next_delivery(deliveries)
        await nxt.ack()
        await assert_nothing_comes(deliveries)

    assert nxt.message.job_id == "fine"


async def test_unacked_deliveries_go_back_when_their_consumer_leaves(
    broker: Broker, model_name: Callable[[str], str]
) -> None:
    model = model_name("echo")
    await publish(broker, model, "j1", "j2", "j3")
    async with broker.consume([model], prefetch=2) as deliveries:
        first, second = await take(deliveries, 2)
        await first.ack()

    async with broker.consume([model], prefetch=5) as deliveries:
        got = await take(deliveries, 2)
        await assert_nothing_comes(deliveries)

    # j2 was handed out, so it is redelivered. j3 may be flagged too, and come first: a real
    # broker pushes it as soon as the ack frees a prefetch slot, so it can be in flight when the
    # consumer leaves, and returns both together.
    assert sorted(ids(got)) == ["j2", "j3"]
    assert next(d for d in got if d.message.job_id == "j2").redelivered
    with pytest.raises(RuntimeError):
        await second.ack()


async def test_competing_consumers_share_the_work_each_message_once(
    broker: Broker, model_name: Callable[[str], str]
) -> None:
    model = model_name("echo")
    job_ids = [f"j{i}" for i in range(20)]
    seen: dict[str, list[str]] = {"one": [], "two": []}

    async def work(name: str) -> None:
        async with broker.consume([model], prefetch=1) as deliveries:
            while sum(map(len, seen.values())) < len(job_ids):
                try:
                    delivery = await asyncio.wait_for(anext(deliveries), QUIET_SECONDS)
                except TimeoutError:
                    continue
                seen[name].append(delivery.message.job_id)
                await asyncio.sleep(0.001)  # the work, so the other consumer gets a turn
                await delivery.ack()

    workers = [asyncio.create_task(work("one")), asyncio.create_task(work("two"))]
    await asyncio.sleep(0)
    await publish(broker, model, *job_ids)
    await asyncio.wait_for(asyncio.gather(*workers), WAIT_SECONDS)

    assert sorted(seen["one"] + seen["two"], key=lambda j: int(j[1:])) == job_ids
    assert seen["one"] and seen["two"]


async def test_a_delivery_is_settled_only_once(
    broker: Broker, model_name: Callable[[str], str]
) -> None:
    model = model_name("echo")
    await publish(broker, model, "j1", "j2")

    async with broker.consume([model], prefetch=2) as deliveries:
        acked, rejected = await take(deliveries, 2)
        await acked.ack()
        await rejected.reject(requeue=False)

        for settle in (acked.ack, rejected.ack):
            with pytest.raises(RuntimeError):
                await settle()
        with pytest.raises(RuntimeError):
            await acked.reject(requeue=True)


async def test_closing_the_broker_ends_consumers_and_refuses_publishing(
    broker: Broker, model_name: Callable[[str], str]
) -> None:
    model = model_name("echo")
    async with broker.consume([model], prefetch=1) as deliveries:

        async def drain() -> list[Delivery]:
            return [d async for d in deliveries]

        draining = asyncio.create_task(drain())
        await asyncio.sleep(0)
        await broker.close()

        assert await asyncio.wait_for(draining, WAIT_SECONDS) == []
    with pytest.raises(RuntimeError):
        await publish(broker, model, "too-late")


@pytest.mark.parametrize("prefetch", [0, -1])
async def test_prefetch_must_be_positive(broker: Broker, prefetch: int) -> None:
    with pytest.raises(ValueError):
        async with broker.consume(None, prefetch=prefetch):
            pass


async def test_a_delayed_message_comes_no_sooner_than_its_delay(
    broker: Broker, model_name: Callable[[str], str]
) -> None:
    model = model_name("echo")
    loop = asyncio.get_running_loop()
    published = loop.time()
    await broker.publish(JobMessage(job_id="later", model=model), delay=0.3)
    await publish(broker, model, "now")

    async with broker.consume([model], prefetch=5) as deliveries:
        first = await next_delivery(deliveries)
        second = await next_delivery(deliveries)
        waited = loop.time() - published

    assert ids([first, second]) == ["now", "later"]
    assert waited >= 0.3
    assert not second.redelivered
