"""JobClient, the blocking client, against a real jobgate. The service runs on the test's event
loop, so every blocking call goes to a thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from jobgate import (
    InvalidArgumentError,
    JobClient,
    JobFailedError,
    JobState,
    NotFoundError,
    UnauthenticatedError,
    WatchJobResponse,
)

from launcher.embedded import Endpoint
from tests.client.conftest import FAST_RETRY, DroppingProxy

T = TypeVar("T")


@pytest.fixture
def sync_client(endpoint: Endpoint) -> Iterator[JobClient]:
    with JobClient(endpoint.address, endpoint.api_key, retry=FAST_RETRY) as client:
        yield client


async def blocking(call: Callable[[], T]) -> T:
    return await asyncio.to_thread(call)


async def test_submit_then_result_returns_the_succeeded_echo(sync_client: JobClient) -> None:
    job = await blocking(lambda: sync_client.submit("local/echo", "hello sync"))

    done = await blocking(lambda: sync_client.result(job.name, timeout=30))

    assert done.state == JobState.STATE_SUCCEEDED
    assert [o.text for o in done.outputs] == ["hello sync"]


async def test_watch_is_a_plain_iterator_of_the_whole_stream(sync_client: JobClient) -> None:
    job = await blocking(lambda: sync_client.submit("local/sleep", duration=0.2))

    messages = await blocking(lambda: list(sync_client.watch(job.name, timeout=30)))

    assert messages[0].WhichOneof("update") == "job"
    sequences = [m.event.sequence for m in messages if m.WhichOneof("update") == "event"]
    final = await blocking(lambda: sync_client.get(job.name))
    assert sequences == list(range(messages[0].job.event_sequence + 1, final.event_sequence + 1))
    assert final.state == JobState.STATE_SUCCEEDED


async def test_run_is_a_plain_iterator_from_the_queued_job_to_its_end(
    sync_client: JobClient,
) -> None:
    messages = await blocking(lambda: list(sync_client.run("local/echo", "run sync", timeout=30)))

    assert messages[0].job.state == JobState.STATE_QUEUED
    final = await blocking(lambda: sync_client.get(messages[0].job.name))
    sequences = [m.event.sequence for m in messages if m.WhichOneof("update") == "event"]
    assert sequences == list(range(2, final.event_sequence + 1))
    assert final.state == JobState.STATE_SUCCEEDED and final.outputs[0].text == "run sync"


async def test_watch_resumes_after_a_dropped_connection(
    proxy: DroppingProxy, endpoint: Endpoint, sync_client: JobClient
) -> None:
    job = await blocking(lambda: sync_client.submit("local/sleep", duration=0.8))
    loop = asyncio.get_running_loop()

    def watch_through_proxy() -> list[WatchJobResponse]:
        seen: list[WatchJobResponse] = []
        with JobClient(proxy.address, endpoint.api_key, retry=FAST_RETRY) as client:
            for message in client.watch(job.name, timeout=30):
                seen.append(message)
                if len(seen) == 3:
                    asyncio.run_coroutine_threadsafe(proxy.drop(pause=0.3), loop).result(5)
        return seen

    seen = await blocking(watch_through_proxy)

    final = await blocking(lambda: sync_client.get(job.name))
    sequences = [m.event.sequence for m in seen if m.WhichOneof("update") == "event"]
    assert proxy.forwarded >= 2
    assert sequences == list(range(seen[0].job.event_sequence + 1, final.event_sequence + 1))


async def test_result_of_a_failing_job_raises_job_failed(sync_client: JobClient) -> None:
    job = await blocking(lambda: sync_client.submit("local/fail", "fail"))

    with pytest.raises(JobFailedError) as failure:
        await blocking(lambda: sync_client.result(job.name, timeout=30))

    assert failure.value.reason == "REQUESTED_FAILURE"
    assert failure.value.job.state == JobState.STATE_FAILED


async def test_errors_are_typed(endpoint: Endpoint, sync_client: JobClient) -> None:
    with pytest.raises(NotFoundError):
        await blocking(lambda: sync_client.get("nope"))
    with pytest.raises(InvalidArgumentError) as invalid:
        await blocking(lambda: sync_client.submit("nobody/nothing", "hi"))
    assert invalid.value.reason == "UNKNOWN_MODEL"

    def with_wrong_key() -> None:
        with JobClient(endpoint.address, "wrong") as client:
            client.models()

    with pytest.raises(UnauthenticatedError):
        await blocking(with_wrong_key)


async def test_list_pages_through_every_job_newest_first(sync_client: JobClient) -> None:
    names = [
        (await blocking(lambda i=i: sync_client.submit("local/echo", f"job {i}"))).name
        for i in range(3)
    ]

    listed = await blocking(lambda: [job.name for job in sync_client.list(page_size=1)])

    assert listed == names[::-1]
