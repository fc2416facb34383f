"""The JobStore contract: what every job store adapter must do, run against each of them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.errors import AlreadyExists, Reason
from core.jobs import (
    TERMINAL_STATES,
    BlobRef,
    Job,
    JobError,
    JobEvent,
    JobInput,
    JobState,
    LogLevel,
    LogLine,
    NewJob,
    Output,
    Progress,
    ProviderTask,
    StateChanged,
    can_transition,
)
from core.ports import Claimed, Held, JobQuery, JobStore
from tests.contract.conftest import JOB_STORES, Reopenable
from tests.contract.legacy_jobs import LEGACY_QUEUED, LEGACY_RUNNING, LEGACY_WRITERS

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CANCELLED_BY_USER = JobError(Reason.CANCELLED, "cancelled by the caller")
BROKEN = JobError(Reason.PROVIDER_ERROR, "the provider broke")


def new_job(
    *,
    owner: str = "alice",
    model: str = "local/echo",
    prompt: str = "hello",
    request_id: str | None = None,
    create_time: datetime = T0,
) -> NewJob:
    return NewJob(
        id=uuid.uuid4().hex,
        owner=owner,
        model=model,
        input=JobInput(prompt=prompt, options={"n": 1, "tags": ["a", "b"]}),
        create_time=create_time,
        request_id=request_id,
    )


async def job_in(store: JobStore, state: JobState, **fields: object) -> Job:
    """A new job brought to `state` the way the service would bring it there."""
    job, _ = await store.create(new_job(**fields))  # type: ignore[arg-type]
    if state is JobState.QUEUED:
        return job
    if state is JobState.CANCELLED:
        cancelled = await store.cancel(job.id, CANCELLED_BY_USER)
        assert cancelled is not None
        return cancelled[0]
    claimed = await store.claim(job.id)
    assert claimed is not None
    if state is not JobState.RUNNING:
        assert await store.finish(job.id, 1, state, BROKEN if state is JobState.FAILED else None)
    found = await store.get(job.id)
    assert found is not None
    return found


async def all_events(store: JobStore, job_id: str) -> list[JobEvent]:
    return await store.events(job_id, after=0)


def sequences(events: list[JobEvent]) -> list[int]:
    return [e.sequence for e in events]


# --- create and get ---


async def test_a_created_job_is_queued_with_its_first_event(job_store: JobStore) -> None:
    job, created = await job_store.create(new_job(request_id="r-1"))

    assert created
    assert job.state is JobState.QUEUED
    assert (job.attempt, job.event_sequence, job.request_id) == (0, 1, "r-1")
    assert job.input == JobInput(prompt="hello", options={"n": 1, "tags": ["a", "b"]})
    assert job.create_time == T0
    assert (job.start_time, job.end_time, job.progress, job.outputs) == (None, None, None, ())
    assert await job_store.get(job.id) == job
    [event] = await all_events(job_store, job.id)
    assert (event.sequence, event.attempt, event.payload) == (1, 0, StateChanged(JobState.QUEUED))


async def test_an_unknown_job_is_none(job_store: JobStore) -> None:
    assert await job_store.get("no-such-job") is None
    assert await job_store.claim("no-such-job") is None
    assert await job_store.cancel("no-such-job", CANCELLED_BY_USER) is None
    assert await job_store.record("no-such-job", 1, LogLine("x")) is None
    assert await job_store.finish("no-such-job", 1, JobState.SUCCEEDED) is None
    assert await job_store.events("no-such-job", after=0) == []


async def test_times_come_back_timezone_aware_in_utc(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.SUCCEEDED)

    for moment in (job.create_time, job.start_time, job.end_time):
        assert moment is not None
        assert moment.utcoffset() == timedelta(0)
    for event in await all_events(job_store, job.id):
        assert event.time.utcoffset() == timedelta(0)


async def test_twenty_concurrent_duplicates_create_exactly_one_job(job_store: JobStore) -> None:
    duplicates = [new_job(request_id="same") for _ in range(20)]

    results = await asyncio.gather(*(job_store.create(d) for d in duplicates))

    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    [job] = await job_store.list(JobQuery(owner="alice", limit=50))
    assert sequences(await all_events(job_store, job.id)) == [1]


async def test_a_repeated_request_returns_the_existing_job_and_records_nothing(
    job_store: JobStore,
) -> None:
    first, _ = await job_store.create(new_job(request_id="r-1"))

    again, created = await job_store.create(new_job(request_id="r-1"))

    assert not created
    assert again == first
    assert sequences(await all_events(job_store, first.id)) == [1]


async def test_a_request_id_reused_with_other_content_is_refused(job_store: JobStore) -> None:
    await job_store.create(new_job(request_id="r-1", prompt="a cat"))

    with pytest.raises(AlreadyExists):
        await job_store.create(new_job(request_id="r-1", prompt="a dog"))
    with pytest.raises(AlreadyExists):
        await job_store.create(new_job(request_id="r-1", prompt="a cat", model="local/sleep"))


async def test_request_ids_belong_to_their_owner(job_store: JobStore) -> None:
    alices, _ = await job_store.create(new_job(owner="alice", request_id="r-1"))

    bobs, created = await job_store.create(new_job(owner="bob", request_id="r-1"))

    assert created
    assert bobs.id != alices.id


async def test_jobs_without_request_id_are_never_merged(job_store: JobStore) -> None:
    results = [await job_store.create(new_job()) for _ in range(3)]

    assert all(created for _, created in results)


# --- transitions ---


@pytest.mark.parametrize("source", list(JobState))
async def test_claim_moves_only_queued_or_running_jobs_to_running(
    job_store: JobStore, source: JobState
) -> None:
    job = await job_in(job_store, source)

    claimed = await job_store.claim(job.id)

    if can_transition(source, JobState.RUNNING):
        assert claimed is not None
        running, event = claimed
        assert running.state is JobState.RUNNING
        assert running.attempt == job.attempt + 1
        assert event.payload == StateChanged(JobState.RUNNING)
        assert (event.sequence, event.attempt) == (job.event_sequence + 1, running.attempt)
    else:
        assert claimed is None
        assert await job_store.get(job.id) == job


@pytest.mark.parametrize("target", sorted(TERMINAL_STATES))
@pytest.mark.parametrize("source", list(JobState))
async def test_finish_moves_only_running_jobs_to_a_terminal_state(
    job_store: JobStore, source: JobState, target: JobState
) -> None:
    job = await job_in(job_store, source)
    error = None if target is JobState.SUCCEEDED else BROKEN

    event = await job_store.finish(job.id, max(job.attempt, 1), target, error)

    after = await job_store.get(job.id)
    assert after is not None
    if can_transition(source, target) and source is JobState.RUNNING:
        assert event is not None
        assert event.payload == StateChanged(target, error)
        assert (after.state, after.error, after.event_sequence) == (target, error, event.sequence)
        assert after.end_time is not None
    else:
        assert event is None
        assert after == job


async def test_a_billed_job_says_so_and_keeps_its_finishing_attempts_usage(
    job_store: JobStore,
) -> None:
    billed, _ = await job_store.create(replace(new_job(), billed=True))
    unbilled, _ = await job_store.create(new_job())
    claimed = await job_store.claim(billed.id)
    assert isinstance(claimed, Claimed)

    await job_store.finish(billed.id, claimed.job.attempt, JobState.SUCCEEDED, usage_units=7)

    after = await job_store.get(billed.id)
    assert billed.billed and after is not None
    assert (after.billed, after.usage_units) == (True, 7)
    assert await job_store.get(unbilled.id) == unbilled
    assert not unbilled.billed and unbilled.usage_units == 0


async def test_finish_refuses_a_state_that_is_not_terminal(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.RUNNING)

    with pytest.raises(ValueError):
        await job_store.finish(job.id, 1, JobState.QUEUED)
    assert await job_store.get(job.id) == job


@pytest.mark.parametrize("source", list(JobState))
async def test_cancel_moves_queued_and_running_jobs_and_leaves_terminal_ones(
    job_store: JobStore, source: JobState
) -> None:
    job = await job_in(job_store, source)
    error = JobError(Reason.CANCELLED, "stop")

    result = await job_store.cancel(job.id, error)

    assert result is not None
    cancelled, event = result
    if can_transition(source, JobState.CANCELLED):
        assert event is not None
        assert event.payload == StateChanged(JobState.CANCELLED, error)
        assert (cancelled.state, cancelled.error) == (JobState.CANCELLED, error)
        assert cancelled.end_time is not None
        assert cancelled.event_sequence == event.sequence == job.event_sequence + 1
        assert await job_store.get(job.id) == cancelled
    else:
        assert event is None
        assert cancelled == job


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
async def test_a_terminal_job_never_changes_again(job_store: JobStore, terminal: JobState) -> None:
    job = await job_in(job_store, terminal)

    assert await job_store.claim(job.id) is None
    assert await job_store.record(job.id, job.attempt, Progress(0.5)) is None
    assert await job_store.record(job.id, job.attempt, LogLine("late")) is None
    assert await job_store.finish(job.id, job.attempt, JobState.SUCCEEDED) is None
    assert await job_store.cancel(job.id, CANCELLED_BY_USER) == (job, None)
    assert await job_store.get(job.id) == job
    assert sequences(await all_events(job_store, job.id)) == list(range(1, job.event_sequence + 1))


async def test_a_cancelled_queued_job_never_starts(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.QUEUED)

    await job_store.cancel(job.id, CANCELLED_BY_USER)

    assert await job_store.claim(job.id) is None
    after = await job_store.get(job.id)
    assert after is not None
    assert (after.state, after.attempt, after.start_time) == (JobState.CANCELLED, 0, None)


async def test_a_cancelled_running_attempt_records_nothing_more(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.RUNNING)

    await job_store.cancel(job.id, CANCELLED_BY_USER)

    assert await job_store.record(job.id, 1, Progress(0.9)) is None
    assert await job_store.finish(job.id, 1, JobState.SUCCEEDED) is None
    after = await job_store.get(job.id)
    assert after is not None
    assert (after.state, after.error, after.progress) == (
        JobState.CANCELLED,
        CANCELLED_BY_USER,
        None,
    )


# --- running attempts ---


async def test_claim_starts_a_fresh_attempt(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.RUNNING)
    await job_store.record(job.id, 1, Progress(0.5, "half"))
    await job_store.record(job.id, 1, Output("text", text="partial"))

    claimed = await job_store.claim(job.id)

    assert claimed is not None
    again, event = claimed
    assert (again.attempt, again.progress, again.outputs) == (2, None, ())
    assert again.start_time is not None
    assert event.attempt == 2


async def test_record_appends_events_and_updates_the_job(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.RUNNING)
    text = Output("caption", text="a cat")
    data = Output("meta", json={"width": 2, "tags": ["x"]})

    recorded = [
        await job_store.record(job.id, 1, Progress(0.25, "rendering")),
        await job_store.record(job.id, 1, LogLine("step 1", LogLevel.WARNING)),
        await job_store.record(job.id, 1, text),
        await job_store.record(job.id, 1, data),
        await job_store.record(job.id, 1, Progress(0.75)),
    ]

    assert [e.sequence for e in recorded if e] == [3, 4, 5, 6, 7]
    assert all(e is not None and e.attempt == 1 for e in recorded)
    after = await job_store.get(job.id)
    assert after is not None
    assert after.progress == Progress(0.75)
    assert after.outputs == (text, data)
    assert after.event_sequence == 7
    payloads = [e.payload for e in await all_events(job_store, job.id)]
    assert payloads[2:] == [e.payload for e in recorded if e]


async def test_a_stale_attempt_writes_nothing(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.RUNNING)
    await job_store.claim(job.id)  # a redelivery: attempt 2 takes over
    before = await job_store.get(job.id)

    assert await job_store.record(job.id, 1, Progress(0.5)) is None
    assert await job_store.record(job.id, 1, Output("o", text="stale")) is None
    assert await job_store.record(job.id, 1, LogLine("stale")) is None
    assert await job_store.finish(job.id, 1, JobState.SUCCEEDED) is None
    assert await job_store.record(job.id, 3, LogLine("from the future")) is None

    assert await job_store.get(job.id) == before
    assert await job_store.finish(job.id, 2, JobState.SUCCEEDED) is not None


async def test_a_queued_job_takes_no_records(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.QUEUED)

    assert await job_store.record(job.id, 0, Progress(0.5)) is None
    assert await job_store.record(job.id, 1, Progress(0.5)) is None
    assert await job_store.get(job.id) == job


async def test_output_blob_references_round_trip(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.RUNNING)
    image = Output("image", blob=BlobRef("jobs/x/image.png", "image/png", 1234, "ab" * 32))

    await job_store.record(job.id, 1, image)

    after = await job_store.get(job.id)
    assert after is not None
    assert after.outputs == (image,)
    assert (await all_events(job_store, job.id))[-1].payload == image


# --- events ---


async def test_events_replay_from_every_sequence_without_gaps_or_duplicates(
    job_store: JobStore,
) -> None:
    job = await job_in(job_store, JobState.RUNNING)
    for i in range(6):
        await job_store.record(job.id, 1, Progress(i / 6))
    await job_store.finish(job.id, 1, JobState.SUCCEEDED)
    full = await all_events(job_store, job.id)
    assert sequences(full) == list(range(1, 10))

    for after in range(len(full) + 1):
        assert await job_store.events(job.id, after=after) == full[after:]
    assert sequences(await job_store.events(job.id, after=2, limit=3)) == [3, 4, 5]
    assert full[-1].terminal


async def test_concurrent_writers_on_one_job_keep_sequences_gapless(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.RUNNING)

    results = await asyncio.gather(
        *(job_store.record(job.id, 1, LogLine(f"line {i}")) for i in range(40)),
        job_store.cancel(job.id, CANCELLED_BY_USER),
        *(job_store.record(job.id, 1, Progress(i / 40)) for i in range(40)),
    )

    events = await all_events(job_store, job.id)
    assert sequences(events) == list(range(1, len(events) + 1))
    written = [r for r in results if isinstance(r, JobEvent)]
    written += [r[1] for r in results if isinstance(r, tuple) and r[1] is not None]
    assert sorted(sequences(written)) == sequences(events)[2:]
    assert events[-1].payload == StateChanged(JobState.CANCELLED, CANCELLED_BY_USER)


# --- queries ---


async def test_list_is_newest_first_with_page_cursors(job_store: JobStore) -> None:
    created = [await job_in(job_store, JobState.QUEUED, create_time=T0) for _ in range(3)]
    created += [
        await job_in(job_store, JobState.QUEUED, create_time=T0 + timedelta(seconds=i))
        for i in range(1, 5)
    ]
    newest_first = sorted(created, key=lambda j: (j.create_time, j.id), reverse=True)

    pages: list[list[Job]] = []
    before = None
    while True:
        page = await job_store.list(JobQuery(owner="alice", limit=3, before=before))
        if not page:
            break
        pages.append(page)
        before = (page[-1].create_time, page[-1].id)

    assert [len(p) for p in pages] == [3, 3, 1]
    assert [j.id for p in pages for j in p] == [j.id for j in newest_first]


async def test_list_filters_by_state_and_model_and_owner(job_store: JobStore) -> None:
    echo_queued = await job_in(job_store, JobState.QUEUED, model="local/echo")
    echo_done = await job_in(job_store, JobState.SUCCEEDED, model="local/echo")
    sleep_queued = await job_in(job_store, JobState.QUEUED, model="local/sleep")
    await job_in(job_store, JobState.QUEUED, owner="bob", model="local/echo")

    def ids(jobs: list[Job]) -> set[str]:
        return {j.id for j in jobs}

    everything = await job_store.list(JobQuery(owner="alice", limit=10))
    assert ids(everything) == {echo_queued.id, echo_done.id, sleep_queued.id}
    queued = await job_store.list(JobQuery(owner="alice", limit=10, state=JobState.QUEUED))
    assert ids(queued) == {echo_queued.id, sleep_queued.id}
    echo = await job_store.list(JobQuery(owner="alice", limit=10, model="local/echo"))
    assert ids(echo) == {echo_queued.id, echo_done.id}
    both = JobQuery(owner="alice", limit=10, state=JobState.SUCCEEDED, model="local/echo")
    assert ids(await job_store.list(both)) == {echo_done.id}
    assert await job_store.list(JobQuery(owner="carol", limit=10)) == []


async def test_jobs_ahead_counts_older_queued_jobs_of_the_same_model(job_store: JobStore) -> None:
    queue = [
        await job_in(job_store, JobState.QUEUED, create_time=T0 + timedelta(seconds=i))
        for i in range(4)
    ]
    await job_in(job_store, JobState.QUEUED, model="local/sleep", create_time=T0)

    assert [await job_store.jobs_ahead(j) for j in queue] == [0, 1, 2, 3]

    await job_store.claim(queue[0].id)
    await job_store.cancel(queue[2].id, CANCELLED_BY_USER)

    assert await job_store.jobs_ahead(queue[3]) == 1


async def test_jobs_ahead_breaks_create_time_ties_by_id(job_store: JobStore) -> None:
    same_time = [await job_in(job_store, JobState.QUEUED, create_time=T0) for _ in range(3)]

    counts = sorted([await job_store.jobs_ahead(j) for j in same_time])

    assert counts == [0, 1, 2]


async def test_unfinished_lists_queued_and_running_jobs_oldest_first(job_store: JobStore) -> None:
    at = [T0 + timedelta(seconds=i) for i in range(6)]
    running = await job_in(job_store, JobState.RUNNING, create_time=at[3])
    queued = await job_in(job_store, JobState.QUEUED, create_time=at[1])
    other_owner = await job_in(job_store, JobState.QUEUED, owner="bob", create_time=at[2])
    for state, moment in zip(TERMINAL_STATES, (at[0], at[4], at[5]), strict=True):
        await job_in(job_store, state, create_time=moment)

    unfinished = await job_store.unfinished()

    assert [j.id for j in unfinished] == [queued.id, other_owner.id, running.id]
    assert [j.id for j in await job_store.unfinished(limit=2)] == [queued.id, other_owner.id]


# --- durability ---


async def test_jobs_and_events_survive_close_and_reopen(
    job_stores: Reopenable[JobStore],
) -> None:
    store = await job_stores.open()
    done = await job_in(store, JobState.SUCCEEDED, request_id="keep")
    running = await job_in(store, JobState.RUNNING)
    await store.record(running.id, 1, Output("o", text="kept"))
    before = [await store.get(done.id), await store.get(running.id)]
    events = [await all_events(store, done.id), await all_events(store, running.id)]
    await store.close()

    reopened = await job_stores.open()

    assert [await reopened.get(done.id), await reopened.get(running.id)] == before
    assert [await all_events(reopened, done.id), await all_events(reopened, running.id)] == events
    assert [j.id for j in await reopened.unfinished()] == [running.id]
    again, created = await reopened.create(new_job(request_id="keep"))
    assert (again.id, created) == (done.id, False)


# --- leases ---

LEASE = timedelta(seconds=60)
# Short enough to wait out in a test, long enough to outlast the claim that follows it.
SHORT_LEASE = timedelta(seconds=0.2)
# Far beyond any job these tests create: the outbox cut-off that takes them all.
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


async def claimed_job(store: JobStore, job_id: str, lease: timedelta) -> Job:
    claimed = await store.claim(job_id, lease)
    assert isinstance(claimed, Claimed), claimed
    return claimed.job


async def test_a_claim_leases_the_job_for_the_time_asked(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.QUEUED)
    before = datetime.now(UTC)

    claimed = await job_store.claim(job.id, LEASE)

    after = datetime.now(UTC)
    assert isinstance(claimed, Claimed)
    running, event = claimed
    assert (running.state, running.attempt, event.attempt) == (JobState.RUNNING, 1, 1)
    assert running.lease_expire_time is not None
    assert before + LEASE <= running.lease_expire_time <= after + LEASE
    assert await job_store.get(job.id) == running


async def test_a_second_claim_during_a_live_lease_is_held_and_writes_nothing(
    job_store: JobStore,
) -> None:
    job = await job_in(job_store, JobState.QUEUED)
    running = await claimed_job(job_store, job.id, LEASE)

    held = await job_store.claim(job.id, LEASE)

    assert running.lease_expire_time is not None
    assert held == Held(running, running.lease_expire_time)
    assert await job_store.get(job.id) == running
    assert sequences(await all_events(job_store, job.id)) == [1, 2]


async def test_after_the_lease_runs_out_the_next_claim_is_a_new_attempt_and_fences_the_old(
    job_store: JobStore,
) -> None:
    job = await job_in(job_store, JobState.QUEUED)
    await claimed_job(job_store, job.id, SHORT_LEASE)
    await asyncio.sleep(SHORT_LEASE.total_seconds() + 0.1)

    second = await claimed_job(job_store, job.id, LEASE)

    assert second.attempt == 2
    assert await job_store.heartbeat(job.id, 1, LEASE) is False
    assert await job_store.record(job.id, 1, Progress(0.5)) is None
    assert await job_store.finish(job.id, 1, JobState.SUCCEEDED) is None
    assert await job_store.get(job.id) == second
    assert await job_store.finish(job.id, 2, JobState.SUCCEEDED) is not None


async def test_without_a_lease_every_claim_starts_the_next_attempt(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.QUEUED)

    attempts = [(await claimed_job(job_store, job.id, timedelta(0))).attempt for _ in range(3)]
    job_now, event = await job_store.claim(job.id)  # type: ignore[misc]

    assert attempts == [1, 2, 3]
    assert (job_now.attempt, event.attempt) == (4, 4)


async def test_a_negative_lease_is_refused(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.RUNNING)

    with pytest.raises(ValueError, match="negative"):
        await job_store.claim(job.id, timedelta(seconds=-1))
    with pytest.raises(ValueError, match="negative"):
        await job_store.heartbeat(job.id, 1, timedelta(seconds=-1))
    assert await job_store.get(job.id) == job


async def test_a_heartbeat_extends_the_lease_of_the_running_attempt(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.QUEUED)
    running = await claimed_job(job_store, job.id, SHORT_LEASE)
    before = datetime.now(UTC)

    assert await job_store.heartbeat(job.id, 1, LEASE) is True

    extended = await job_store.get(job.id)
    assert extended is not None
    assert extended.lease_expire_time is not None
    assert extended.lease_expire_time >= before + LEASE
    assert extended == replace(running, lease_expire_time=extended.lease_expire_time)
    await asyncio.sleep(SHORT_LEASE.total_seconds() + 0.1)
    assert await job_store.claim(job.id, LEASE) == Held(extended, extended.lease_expire_time)
    assert sequences(await all_events(job_store, job.id)) == [1, 2]


@pytest.mark.parametrize("state", list(JobState))
async def test_a_heartbeat_of_an_attempt_that_does_not_hold_the_job_is_refused(
    job_store: JobStore, state: JobState
) -> None:
    job = await job_in(job_store, state)
    stale = [0, 1, 2] if state is not JobState.RUNNING else [0, 2]

    results = [await job_store.heartbeat(job.id, attempt, LEASE) for attempt in stale]

    assert results == [False] * len(stale)
    assert await job_store.get(job.id) == job
    assert await job_store.heartbeat("no-such-job", 1, LEASE) is False


@pytest.mark.parametrize("end", ["finish", "cancel"])
async def test_the_end_of_a_job_clears_its_lease(job_store: JobStore, end: str) -> None:
    job = await job_in(job_store, JobState.QUEUED)
    await claimed_job(job_store, job.id, LEASE)

    if end == "finish":
        assert await job_store.finish(job.id, 1, JobState.FAILED, BROKEN) is not None
    else:
        assert await job_store.cancel(job.id, CANCELLED_BY_USER) is not None

    ended = await job_store.get(job.id)
    assert ended is not None
    assert ended.state.terminal
    assert ended.lease_expire_time is None
    assert await job_store.claim(job.id, LEASE) is None
    assert await job_store.heartbeat(job.id, 1, LEASE) is False


# --- provider tasks (never pay twice) ---

TASK = ProviderTask(model="kling/kling-v2-master", id="task-123")


async def test_a_provider_task_is_recorded_by_the_running_attempt_and_writes_no_event(
    job_store: JobStore,
) -> None:
    job = await job_in(job_store, JobState.RUNNING)

    assert await job_store.set_provider_task(job.id, 1, TASK) is True

    found = await job_store.get(job.id)
    assert found == replace(job, provider_task=TASK)
    assert sequences(await all_events(job_store, job.id)) == [1, 2]


@pytest.mark.parametrize("source", [s for s in JobState if s is not JobState.RUNNING])
async def test_only_a_running_job_takes_a_provider_task(
    job_store: JobStore, source: JobState
) -> None:
    job = await job_in(job_store, source)

    assert await job_store.set_provider_task(job.id, max(job.attempt, 1), TASK) is False
    assert await job_store.get(job.id) == job
    assert await job_store.set_provider_task("no-such-job", 1, TASK) is False


async def test_a_stale_attempt_cannot_record_a_provider_task(job_store: JobStore) -> None:
    job = await job_in(job_store, JobState.QUEUED)
    await job_store.claim(job.id)
    await job_store.claim(job.id)  # attempt 2 took over

    assert await job_store.set_provider_task(job.id, 1, TASK) is False
    found = await job_store.get(job.id)
    assert found is not None and found.provider_task is None


async def test_the_next_attempt_keeps_the_provider_task_but_not_progress_or_outputs(
    job_store: JobStore,
) -> None:
    job = await job_in(job_store, JobState.RUNNING)
    await job_store.set_provider_task(job.id, 1, TASK)
    await job_store.record(job.id, 1, Progress(0.5, "polling"))
    await job_store.record(job.id, 1, Output("text", text="partial"))

    second = await claimed_job(job_store, job.id, timedelta(0))

    assert (second.attempt, second.provider_task) == (2, TASK)
    assert (second.progress, second.outputs) == (None, ())
    newer = ProviderTask(model="kling/kling-v2-master", id="task-456")
    assert await job_store.set_provider_task(job.id, 2, newer) is True
    assert await job_store.finish(job.id, 2, JobState.SUCCEEDED) is not None
    done = await job_store.get(job.id)
    assert done is not None and done.provider_task == newer


async def test_a_provider_task_survives_reopening_the_store(
    job_stores: Reopenable[JobStore],
) -> None:
    store = await job_stores.open()
    job = await job_in(store, JobState.RUNNING)
    await store.set_provider_task(job.id, 1, TASK)

    reopened = await job_stores.open()

    found = await reopened.get(job.id)
    assert found is not None and found.provider_task == TASK
    [listed] = await reopened.list(JobQuery(owner="alice", limit=10))
    assert listed.provider_task == TASK


# --- the publish outbox ---


async def test_new_jobs_wait_in_the_outbox_until_marked_published(job_store: JobStore) -> None:
    first, second, third = [
        await job_in(job_store, JobState.QUEUED, create_time=T0 + timedelta(seconds=i))
        for i in (2, 0, 1)
    ]

    assert await job_store.unpublished(FAR_FUTURE, 10) == [second, third, first]
    await job_store.mark_published([first.id, second.id])

    assert await job_store.unpublished(FAR_FUTURE, 10) == [third]
    await job_store.mark_published([first.id, third.id, "no-such-job"])
    assert await job_store.unpublished(FAR_FUTURE, 10) == []
    assert await job_store.get(first.id) == first


async def test_the_outbox_gives_jobs_older_than_the_cut_off_oldest_first_up_to_the_limit(
    job_store: JobStore,
) -> None:
    jobs = [
        await job_in(job_store, JobState.QUEUED, create_time=T0 + timedelta(seconds=i))
        for i in range(4)
    ]
    cut_off = T0 + timedelta(seconds=3)  # the job created at the cut-off is not older than it

    assert await job_store.unpublished(cut_off, 10) == jobs[:3]
    assert await job_store.unpublished(cut_off, 2) == jobs[:2]
    assert await job_store.unpublished(T0, 10) == []


async def test_only_queued_jobs_need_publishing(job_store: JobStore) -> None:
    by_state = {state: await job_in(job_store, state) for state in JobState}

    assert await job_store.unpublished(FAR_FUTURE, 10) == [by_state[JobState.QUEUED]]


async def test_many_jobs_are_marked_published_at_once(job_store: JobStore) -> None:
    jobs = [(await job_store.create(new_job()))[0] for _ in range(60)]
    ids = [j.id for j in jobs]

    await job_store.mark_published([])
    assert len(await job_store.unpublished(FAR_FUTURE, 200)) == 60
    await job_store.mark_published(ids[:50] + ids[:10])

    assert {j.id for j in await job_store.unpublished(FAR_FUTURE, 200)} == set(ids[50:])
    await job_store.mark_published(tuple(ids))
    assert await job_store.unpublished(FAR_FUTURE, 200) == []


# --- databases from before leases and the outbox ---

_FACTORIES = {param.id: param.values[0] for param in JOB_STORES}


@pytest.fixture(params=sorted(LEGACY_WRITERS))
async def legacy_job_store(request: pytest.FixtureRequest) -> AsyncIterator[JobStore]:
    """A store opened over a database the previous release wrote (see legacy_jobs.py)."""
    await LEGACY_WRITERS[request.param](request)
    stores: Reopenable[Any] = Reopenable(_FACTORIES[request.param](request))  # type: ignore[operator]
    yield await stores.open()
    await stores.close_all()


async def test_a_database_from_before_leases_is_upgraded_when_opened(
    legacy_job_store: JobStore,
) -> None:
    store = legacy_job_store
    queued, running = await store.get(LEGACY_QUEUED), await store.get(LEGACY_RUNNING)
    assert queued is not None and running is not None
    assert (queued.state, queued.lease_expire_time) == (JobState.QUEUED, None)
    assert (running.state, running.attempt, running.lease_expire_time) == (
        JobState.RUNNING,
        1,
        None,
    )

    # Its queued job may never have reached the broker: the outbox publishes it once more.
    assert await store.unpublished(FAR_FUTURE, 10) == [queued]
    # A running job without a lease is taken over, as before leases; then the lease holds it.
    taken_over = await claimed_job(store, running.id, LEASE)
    assert taken_over.attempt == 2
    assert isinstance(await store.claim(running.id, LEASE), Held)
    assert await store.heartbeat(running.id, 2, LEASE) is True
    await store.mark_published([queued.id])
    assert await store.unpublished(FAR_FUTURE, 10) == []
    fresh, _ = await store.create(new_job())
    assert await store.unpublished(FAR_FUTURE, 10) == [fresh]
