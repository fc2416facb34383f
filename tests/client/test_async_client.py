"""AsyncJobClient against a real one-process jobgate over real gRPC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import timedelta

import pytest
from google.protobuf import json_format
from jobgate import (
    AsyncJobClient,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    JobEvent,
    JobFailedError,
    JobState,
    NotFoundError,
    UnauthenticatedError,
    WatchJobResponse,
)

from core.settings import Settings
from launcher.embedded import EmbeddedService, Endpoint
from tests.client.conftest import FAST_RETRY, DroppingProxy

StartService = Callable[[Settings], Awaitable[tuple[EmbeddedService, Endpoint]]]


def events_of(messages: Sequence[WatchJobResponse]) -> list[JobEvent]:
    return [m.event for m in messages if m.WhichOneof("update") == "event"]


def sequences_of(messages: Sequence[WatchJobResponse]) -> list[int]:
    return [event.sequence for event in events_of(messages)]


def states_of(messages: Sequence[WatchJobResponse]) -> list[int]:
    return [e.state_change.state for e in events_of(messages) if e.HasField("state_change")]


def assert_every_event_once(messages: Sequence[WatchJobResponse], last_sequence: int) -> None:
    """The stream's snapshot came first, once, and then every later event exactly once."""
    kinds = [m.WhichOneof("update") for m in messages]
    assert kinds[0] == "job" and kinds.count("job") == 1
    first = messages[0].job.event_sequence + 1
    assert sequences_of(messages) == list(range(first, last_sequence + 1))


async def watch_all(client: AsyncJobClient, name: str, after: int = 0) -> list[WatchJobResponse]:
    return [message async for message in client.watch(name, after, timeout=30)]


@pytest.fixture
def made_outside_a_loop(endpoint: Endpoint) -> AsyncJobClient:
    return AsyncJobClient(endpoint.address, endpoint.api_key)


async def test_a_client_made_outside_the_event_loop_works_inside_it(
    made_outside_a_loop: AsyncJobClient,
) -> None:
    async with made_outside_a_loop as client:
        assert await client.models()


async def test_submit_then_result_returns_the_succeeded_echo(client: AsyncJobClient) -> None:
    job = await client.submit("local/echo", "hello client")
    assert job.state == JobState.STATE_QUEUED and job.name.startswith("jobs/")

    done = await client.result(job.name, timeout=30)

    assert done.state == JobState.STATE_SUCCEEDED
    assert [o.text for o in done.outputs if o.label == "echo"] == ["hello client"]


async def test_names_and_bare_ids_both_address_a_job(client: AsyncJobClient) -> None:
    job = await client.submit("local/echo", "by id")
    job_id = job.name.removeprefix("jobs/")

    assert (await client.get(job_id)).name == job.name
    assert (await client.result(job_id, timeout=30)).name == job.name


async def test_submit_sends_options_as_they_are(client: AsyncJobClient) -> None:
    options = {"style": "noir", "steps": 4, "nested": {"tags": ["a", "b"]}}
    job = await client.submit("local/echo", "with options", options=options)

    done = await client.result(job.name, timeout=30)

    (echoed,) = [o for o in done.outputs if o.label == "options"]
    assert json_format.MessageToDict(echoed.json) == options


async def test_duration_is_taken_as_seconds_or_timedelta(client: AsyncJobClient) -> None:
    as_float = await client.submit("local/sleep", duration=0.25)
    as_timedelta = await client.submit("local/sleep", duration=timedelta(milliseconds=250))

    for job in (as_float, as_timedelta):
        assert job.input.duration.ToTimedelta() == timedelta(milliseconds=250)
        assert (await client.result(job.name, timeout=30)).state == JobState.STATE_SUCCEEDED


async def test_watch_yields_the_snapshot_then_every_event_in_order_to_the_end(
    client: AsyncJobClient,
) -> None:
    job = await client.submit("local/sleep", duration=0.3)

    messages = await watch_all(client, job.name)

    assert_every_event_once(messages, (await client.get(job.name)).event_sequence)
    assert any(e.HasField("progress") for e in events_of(messages))
    assert states_of(messages)[-1] == JobState.STATE_SUCCEEDED


async def test_watch_after_a_sequence_sends_only_what_followed(client: AsyncJobClient) -> None:
    job = await client.submit("local/sleep", duration=0.2)
    done = await client.result(job.name, timeout=30)

    resumed = await watch_all(client, job.name, after=3)

    assert [m.WhichOneof("update") for m in resumed] == ["event"] * (done.event_sequence - 3)
    assert sequences_of(resumed) == list(range(4, done.event_sequence + 1))


async def test_watch_past_the_last_event_of_a_finished_job_ends_at_once(
    client: AsyncJobClient,
) -> None:
    job = await client.submit("local/echo", "done")
    done = await client.result(job.name, timeout=30)

    assert await watch_all(client, job.name, after=done.event_sequence) == []


async def test_watch_resumes_after_dropped_connections_with_no_gap_or_repeat(
    proxy: DroppingProxy, endpoint: Endpoint, client: AsyncJobClient
) -> None:
    job = await client.submit("local/sleep", duration=1.0)
    seen: list[WatchJobResponse] = []
    async with AsyncJobClient(proxy.address, endpoint.api_key, retry=FAST_RETRY) as via_proxy:
        async for message in via_proxy.watch(job.name, timeout=30):
            seen.append(message)
            # Cut twice while the job runs; the second time the service stays away a while,
            # so that events pile up that only the resumed stream can deliver.
            if len(events_of(seen)) in (2, 4) and message.WhichOneof("update") == "event":
                await proxy.drop(pause=0.3 if len(events_of(seen)) == 4 else 0.0)

    assert proxy.forwarded >= 3
    assert_every_event_once(seen, (await client.get(job.name)).event_sequence)
    assert states_of(seen)[-1] == JobState.STATE_SUCCEEDED


async def test_watch_resumes_across_a_restart_of_the_service(
    settings: Settings, start_service: StartService
) -> None:
    service, endpoint = await start_service(settings)
    same_port = replace(settings, listen=endpoint.address)
    async with AsyncJobClient(endpoint.address, endpoint.api_key, retry=FAST_RETRY) as client:
        job = await client.submit("local/sleep", duration=1.0)
        seen: list[WatchJobResponse] = []
        async for message in client.watch(job.name, timeout=30):
            seen.append(message)
            if len(events_of(seen)) == 3 and message.WhichOneof("update") == "event":
                await service.stop()
                service, _ = await start_service(same_port)
        done = await client.get(job.name)

    assert_every_event_once(seen, done.event_sequence)
    assert states_of(seen)[-1] == JobState.STATE_SUCCEEDED


async def test_run_creates_the_job_and_streams_it_to_the_end_in_one_call(
    client: AsyncJobClient,
) -> None:
    messages = [m async for m in client.run("local/sleep", duration=0.3, timeout=30)]

    first = messages[0].job
    assert first.state == JobState.STATE_QUEUED and first.model == "local/sleep"
    assert_every_event_once(messages, (await client.get(first.name)).event_sequence)
    assert states_of(messages)[-1] == JobState.STATE_SUCCEEDED


async def test_run_resumes_after_dropped_connections_with_no_gap_or_repeat(
    proxy: DroppingProxy, endpoint: Endpoint, client: AsyncJobClient
) -> None:
    seen: list[WatchJobResponse] = []
    async with AsyncJobClient(proxy.address, endpoint.api_key, retry=FAST_RETRY) as via_proxy:
        async for message in via_proxy.run("local/sleep", duration=1.0, timeout=30):
            seen.append(message)
            if len(events_of(seen)) in (2, 4) and message.WhichOneof("update") == "event":
                await proxy.drop(pause=0.3 if len(events_of(seen)) == 4 else 0.0)

    name = seen[0].job.name
    assert proxy.forwarded >= 3
    assert_every_event_once(seen, (await client.get(name)).event_sequence)
    assert states_of(seen)[-1] == JobState.STATE_SUCCEEDED
    assert [j.name async for j in client.list(model="local/sleep")] == [name]


async def test_run_retries_while_the_service_is_away_and_creates_one_job(
    proxy: DroppingProxy, endpoint: Endpoint, client: AsyncJobClient
) -> None:
    await proxy.drop(pause=0.4)
    async with AsyncJobClient(proxy.address, endpoint.api_key, retry=FAST_RETRY) as via_proxy:
        messages = [m async for m in via_proxy.run("local/echo", "patient run", timeout=30)]

    assert states_of(messages)[-1] == JobState.STATE_SUCCEEDED
    listed = [j.name async for j in client.list() if j.input.prompt == "patient run"]
    assert listed == [messages[0].job.name]


async def test_an_invalid_run_raises_invalid_argument_naming_the_field(
    client: AsyncJobClient,
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        async for _ in client.run("local/nope", "x"):
            pass

    assert caught.value.reason == "UNKNOWN_MODEL"
    assert [v.field for v in caught.value.field_violations] == ["job.model"]


async def test_result_raises_job_failed_with_the_job_and_its_reason(
    client: AsyncJobClient,
) -> None:
    job = await client.submit("local/fail", "please fail")

    with pytest.raises(JobFailedError) as failure:
        await client.result(job.name, timeout=30)

    assert failure.value.job.name == job.name
    assert failure.value.job.state == JobState.STATE_FAILED
    assert failure.value.reason == "REQUESTED_FAILURE"
    assert failure.value.domain == "jobgate.dev"


async def test_result_of_a_cancelled_job_raises_job_failed(client: AsyncJobClient) -> None:
    job = await client.submit("local/sleep", duration=30)

    cancelled = await client.cancel(job.name)

    assert cancelled.state == JobState.STATE_CANCELLED
    with pytest.raises(JobFailedError) as failure:
        await client.result(job.name, timeout=30)
    assert failure.value.job.state == JobState.STATE_CANCELLED
    assert failure.value.reason == "CANCELLED"


async def test_result_gives_up_after_its_timeout(client: AsyncJobClient) -> None:
    job = await client.submit("local/sleep", duration=30)

    with pytest.raises(DeadlineExceededError):
        await client.result(job.name, timeout=0.3)

    await client.cancel(job.name)


async def test_a_wrong_api_key_raises_unauthenticated(endpoint: Endpoint) -> None:
    async with AsyncJobClient(endpoint.address, "not-a-key") as client:
        with pytest.raises(UnauthenticatedError) as error:
            await client.submit("local/echo", "hi")

    assert error.value.reason == "API_KEY_INVALID"


async def test_an_unknown_model_raises_invalid_argument_naming_the_field(
    client: AsyncJobClient,
) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        await client.submit("nobody/nothing", "hi")

    assert error.value.reason == "UNKNOWN_MODEL"
    assert [v.field for v in error.value.field_violations] == ["job.model"]
    assert "nobody/nothing" in error.value.message


async def test_an_unknown_job_raises_not_found(client: AsyncJobClient) -> None:
    with pytest.raises(NotFoundError) as error:
        await client.get("jobs/missing")
    assert error.value.reason == "JOB_NOT_FOUND"

    with pytest.raises(NotFoundError):
        async for _ in client.watch("missing"):
            pass


async def test_cancelling_a_finished_job_raises_failed_precondition(
    client: AsyncJobClient,
) -> None:
    job = await client.submit("local/echo", "quick")
    await client.result(job.name, timeout=30)

    with pytest.raises(FailedPreconditionError) as error:
        await client.cancel(job.name)
    assert error.value.reason == "JOB_FINISHED"


async def test_the_same_request_id_returns_the_same_job(client: AsyncJobClient) -> None:
    first = await client.submit("local/echo", "once", request_id="req-1")
    again = await client.submit("local/echo", "once", request_id="req-1")

    assert again.name == first.name


async def test_submit_retries_while_the_service_is_away_and_creates_one_job(
    proxy: DroppingProxy, endpoint: Endpoint, client: AsyncJobClient
) -> None:
    await proxy.drop(pause=0.4)
    async with AsyncJobClient(proxy.address, endpoint.api_key, retry=FAST_RETRY) as via_proxy:
        job = await via_proxy.submit("local/echo", "patient", request_id=None)

    assert job.state == JobState.STATE_QUEUED
    assert [j.name async for j in client.list() if j.input.prompt == "patient"] == [job.name]


async def test_list_pages_through_every_job_newest_first(client: AsyncJobClient) -> None:
    names = [(await client.submit("local/echo", f"job {i}")).name for i in range(5)]

    listed = [job.name async for job in client.list(page_size=2)]

    assert listed == names[::-1]


async def test_list_filters_by_state_and_model(client: AsyncJobClient) -> None:
    echo = await client.submit("local/echo", "echo")
    await client.result(echo.name, timeout=30)
    sleeping = await client.submit("local/sleep", duration=30)

    succeeded = [job.name async for job in client.list(state="succeeded")]
    sleeps = [job.name async for job in client.list(model="local/sleep")]
    # Queued first: a job that starts between the two lists is then seen once or twice, never
    # missed.
    queued_or_running = [
        job.name async for job in client.list(state="QUEUED", model="local/sleep")
    ] + [job.name async for job in client.list(state=JobState.STATE_RUNNING, model="local/sleep")]

    assert succeeded == [echo.name]
    assert sleeps == [sleeping.name]
    assert set(queued_or_running) == {sleeping.name}
    await client.cancel(sleeping.name)


async def test_an_unknown_state_is_a_clear_value_error(client: AsyncJobClient) -> None:
    with pytest.raises(ValueError, match="unknown job state 'sleepy'"):
        _ = [job async for job in client.list(state="sleepy")]


async def test_models_lists_the_local_catalog(client: AsyncJobClient) -> None:
    models = {model.id: model for model in await client.models()}

    assert {"local/echo", "local/sleep", "local/image", "local/fail"} <= set(models)
    assert models["local/echo"].provider == "local"
