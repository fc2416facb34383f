"""What the MongoDB job store promises beyond the JobStore contract: small documents, few round
trips, a gapless event log that survives a crash mid-flush, and clear start-up errors."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from core.adapters.mongo_jobs import BUCKET_EVENTS, MAX_INLINE_OUTPUT_BYTES, MongoJobStore
from core.backends import open_backends
from core.catalog import Catalog
from core.errors import ConfigError
from core.jobs import JobInput, JobState, LogLine, Output, Progress
from core.settings import Settings
from tests.contract.test_job_store import all_events, job_in, new_job, sequences
from tests.fixtures.mongo import CommandCounter, free_port

# create, claim, 10 progress, finish, get: one round trip each.
ROUND_TRIPS_PER_JOB = 14


@pytest.fixture
def counter() -> CommandCounter:
    return CommandCounter()


@pytest.fixture
async def store(mongo_database_url: str, counter: CommandCounter) -> AsyncIterator[MongoJobStore]:
    store = await MongoJobStore.open(mongo_database_url, event_listeners=[counter])
    yield store
    await store.close()


@pytest.fixture
async def raw(mongo_database_url: str) -> AsyncIterator[Any]:
    """The test's database, for looking at (and tampering with) the documents themselves."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_database_url)
    yield client.get_default_database()
    await client.close()


async def test_a_whole_job_costs_one_round_trip_per_operation(
    store: MongoJobStore, counter: CommandCounter
) -> None:
    counter.names.clear()

    job, _ = await store.create(new_job(request_id="r-1"))
    claimed = await store.claim(job.id)
    assert claimed is not None
    for i in range(10):
        assert await store.record(job.id, 1, Progress(i / 10))
    assert await store.finish(job.id, 1, JobState.SUCCEEDED)
    assert await store.get(job.id) is not None

    assert len(counter.names) == ROUND_TRIPS_PER_JOB, counter.names


async def test_an_oversized_inline_output_is_refused_and_nothing_is_written(
    store: MongoJobStore,
) -> None:
    job = await job_in(store, JobState.RUNNING)
    too_long = "x" * (MAX_INLINE_OUTPUT_BYTES + 1)

    with pytest.raises(ValueError, match="blob"):
        await store.record(job.id, 1, Output("text", text=too_long))
    with pytest.raises(ValueError, match="blob"):
        await store.record(job.id, 1, Output("data", json={"rows": [too_long]}))

    assert await store.get(job.id) == job
    fits = Output("text", text="x" * MAX_INLINE_OUTPUT_BYTES)
    assert await store.record(job.id, 1, fits) is not None


async def test_long_event_logs_move_to_buckets_and_the_job_document_stays_small(
    store: MongoJobStore, raw: Any
) -> None:
    job = await job_in(store, JobState.RUNNING)
    for i in range(3 * BUCKET_EVENTS):
        await store.record(job.id, 1, LogLine(f"line {i}"))

    document = await raw.jobs.find_one({"_id": job.id})
    assert len(document["events"]) < BUCKET_EVENTS
    assert await raw.job_events.count_documents({"job_id": job.id}) == 3
    full = await all_events(store, job.id)
    assert sequences(full) == list(range(1, 3 * BUCKET_EVENTS + 3))
    for after in (0, 1, BUCKET_EVENTS - 1, BUCKET_EVENTS, BUCKET_EVENTS + 5, len(full)):
        assert await store.events(job.id, after=after, limit=40) == full[after : after + 40]


async def test_a_crash_between_writing_a_bucket_and_trimming_the_tail_loses_and_repeats_nothing(
    store: MongoJobStore, raw: Any
) -> None:
    job = await job_in(store, JobState.RUNNING)
    for i in range(BUCKET_EVENTS + 3):
        await store.record(job.id, 1, LogLine(f"line {i}"))
    before = await all_events(store, job.id)
    # Undo the trim of the finished flush: the bucket exists, its events are still in the tail.
    bucket = await raw.job_events.find_one({"job_id": job.id, "first": 1})
    await raw.jobs.update_one(
        {"_id": job.id},
        {"$set": {"flushed": 0}, "$push": {"events": {"$each": bucket["events"], "$position": 0}}},
    )

    assert await all_events(store, job.id) == before
    for i in range(BUCKET_EVENTS):
        await store.record(job.id, 1, LogLine(f"more {i}"))

    events = await all_events(store, job.id)
    assert events[: len(before)] == before
    assert sequences(events) == list(range(1, len(events) + 1))
    document = await raw.jobs.find_one({"_id": job.id})
    assert len(document["events"]) < BUCKET_EVENTS


async def test_open_json_keys_that_mongodb_field_names_cannot_hold_round_trip(
    store: MongoJobStore,
) -> None:
    awkward = {"$where": 1, "a.b": [2**70, None], "": "empty"}
    created, _ = await store.create(replace(new_job(), input=JobInput(options=awkward)))
    claimed = await store.claim(created.id)
    assert claimed is not None

    await store.record(created.id, 1, Output("data", json=awkward))

    found = await store.get(created.id)
    assert found is not None
    assert found.input.options == awkward
    assert found.outputs == (Output("data", json=awkward),)
    assert (await all_events(store, created.id))[-1].payload == Output("data", json=awkward)


async def test_opening_twice_keeps_the_indexes_and_the_data(mongo_database_url: str) -> None:
    first = await MongoJobStore.open(mongo_database_url)
    job, _ = await first.create(new_job(request_id="r-1"))
    await first.close()

    second = await MongoJobStore.open(mongo_database_url)
    try:
        again, created = await second.create(new_job(request_id="r-1"))
    finally:
        await second.close()

    assert (again, created) == (job, False)


def _settings(tmp_path: Path, job_store_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", blob_http_listen="127.0.0.1:0", job_store_url=job_store_url
    )


async def test_open_backends_uses_mongodb_for_a_mongodb_url(
    tmp_path: Path, mongo_database_url: str
) -> None:
    backends = await open_backends(
        _settings(tmp_path, mongo_database_url), Catalog([]), serves_api=False
    )
    try:
        assert isinstance(backends.jobs, MongoJobStore)
    finally:
        await backends.close()


async def test_an_unreachable_mongodb_fails_start_up_fast_with_one_line(tmp_path: Path) -> None:
    url = f"mongodb://127.0.0.1:{free_port()}/jobs?serverSelectionTimeoutMS=300"
    started = time.monotonic()

    with pytest.raises(ConfigError) as caught:
        await open_backends(_settings(tmp_path, url), Catalog([]), serves_api=False)

    message = str(caught.value)
    assert message.startswith(f"JOBGATE_JOB_STORE_URL={url!r}: cannot reach MongoDB within 0.3 s")
    assert "\n" not in message
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("url", ["mongodb://", "mongodb://host:notaport/jobs"])
async def test_a_malformed_mongodb_url_fails_start_up_with_one_line(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(ConfigError, match=r"^JOBGATE_JOB_STORE_URL=.*: malformed MongoDB URL"):
        await open_backends(_settings(tmp_path, url), Catalog([]), serves_api=False)
