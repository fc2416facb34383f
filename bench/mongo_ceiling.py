"""The MongoDB benchmark: the server's raw ceiling beside jobgate's job store on it.

Run: `.venv/bin/python -m bench.mongo_ceiling`. Uses JOBGATE_TEST_MONGO_URL when it names a
MongoDB, else starts SecantusDB on a free port in a temporary folder. Measures
- the raw rate of each operation a job needs (insert_one, find_one_and_update, update_one,
  find_one), many in flight;
- jobs/s through MongoJobStore for a whole lifecycle (create, claim, 3 records, finish), and the
  round trips each job costs, counted by a command listener;
- the jobs/s the raw ceiling predicts for that many round trips, to show what the store loses.
Everything runs in a database of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument

from bench.stats import Result, table
from core.adapters.mongo_jobs import MongoJobStore
from core.jobs import JobInput, JobState, LogLine, NewJob, Output, Progress
from tests.fixtures.mongo import MONGO_URL_ENV, CommandCounter, SecantusServer, with_database

# What one job costs in the store: create = insert_one, then claim, 3 records and finish are one
# find_one_and_update each.
JOB_OPERATIONS = {"insert_one": 1, "find_one_and_update": 5}


@contextmanager
def mongo_server() -> Iterator[str]:
    configured = os.environ.get(MONGO_URL_ENV)
    if configured:
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="jobgate-bench-mongo-") as storage:
        server = SecantusServer(Path(storage))
        try:
            server.wait_ready()
            yield server.url
        finally:
            server.stop()


async def rate(count: int, concurrency: int, operation: Callable[[int], Awaitable[Any]]) -> float:
    """Operations per second for `count` calls of `operation(i)`, `concurrency` in flight."""
    queue = iter(range(count))

    async def lane() -> None:
        for i in queue:
            await operation(i)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def raw_ceiling(url: str, count: int, concurrency: int) -> dict[str, float]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        docs = client.get_default_database()["raw"]
        ids = [uuid.uuid4().hex for _ in range(count)]

        async def insert(i: int) -> None:
            await docs.insert_one({"_id": ids[i], "state": "QUEUED", "n": 0, "events": []})

        async def find_and_update(i: int) -> None:
            await docs.find_one_and_update(
                {"_id": ids[i], "state": "QUEUED"},
                {"$set": {"state": "RUNNING"}, "$inc": {"n": 1}},
                return_document=ReturnDocument.AFTER,
            )

        async def update(i: int) -> None:
            await docs.update_one({"_id": ids[i]}, {"$push": {"events": {"seq": 2}}})

        async def find(i: int) -> None:
            await docs.find_one({"_id": ids[i]})

        return {
            "insert_one": await rate(count, concurrency, insert),
            "find_one_and_update": await rate(count, concurrency, find_and_update),
            "update_one": await rate(count, concurrency, update),
            "find_one": await rate(count, concurrency, find),
        }
    finally:
        await client.close()


async def job_lifecycle(url: str, jobs: int, concurrency: int) -> tuple[float, float]:
    """(jobs/s, round trips per job) through MongoJobStore."""
    counter = CommandCounter()
    store = await MongoJobStore.open(url, event_listeners=[counter])
    now = datetime.now(UTC)

    async def one_job(i: int) -> None:
        job_id = uuid.uuid4().hex
        await store.create(NewJob(job_id, "bench", "local/echo", JobInput(prompt=f"p{i}"), now))
        await store.claim(job_id)
        await store.record(job_id, 1, Progress(0.5))
        await store.record(job_id, 1, LogLine("working"))
        await store.record(job_id, 1, Output("text", text="done"))
        await store.finish(job_id, 1, JobState.SUCCEEDED)

    try:
        counter.names.clear()
        jobs_per_second = await rate(jobs, concurrency, one_job)
    finally:
        await store.close()
    return jobs_per_second, len(counter.names) / jobs


def predicted_jobs_per_second(ceiling: dict[str, float]) -> float:
    """Jobs/s if the store cost nothing beyond the raw operations a job needs."""
    seconds = sum(n / ceiling[op] for op, n in JOB_OPERATIONS.items())
    return 1 / seconds


async def measure(url: str, count: int, jobs: int, concurrency: int) -> list[Result]:
    ceiling = await raw_ceiling(url, count, concurrency)
    jobs_per_second, round_trips = await job_lifecycle(url, jobs, concurrency)
    results = [Result(f"raw {op}", value, "ops/s") for op, value in ceiling.items()]
    results += [
        Result("jobs predicted by the raw ceiling", predicted_jobs_per_second(ceiling), "jobs/s"),
        Result("jobs through MongoJobStore", jobs_per_second, "jobs/s"),
        Result("round trips per job", round_trips, "commands"),
    ]
    return results


async def run(count: int, jobs: int, concurrency: int) -> None:
    with mongo_server() as server_url:
        database = f"jobgate_bench_{uuid.uuid4().hex[:12]}"
        url = with_database(server_url, database)
        try:
            results = await measure(url, count, jobs, concurrency)
        finally:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server_url)
            await client.drop_database(database)
            await client.close()
    print(f"MongoDB at {server_url}: {count} raw ops each, {jobs} jobs, {concurrency} in flight")
    print(table(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1000, help="raw operations of each kind")
    parser.add_argument("--jobs", type=int, default=200, help="whole job lifecycles")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="operations in flight (SecantusDB slows past ~8)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.ops, args.jobs, args.concurrency))


if __name__ == "__main__":
    main()
