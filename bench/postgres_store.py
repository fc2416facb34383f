"""The PostgreSQL job store alone: whole job lifecycles per second, many jobs in flight.

Each job is what a worker and the server make the store do for a short job: create, claim,
three records (progress, log, output), finish. The benchmark runs in a database of its own,
created on the server named by --url and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.stats import Result, percentile, table
from core.adapters.postgres import DEFAULT_POOL_SIZE
from core.adapters.postgres_jobs import PostgresJobStore
from core.jobs import JobInput, JobState, LogLine, NewJob, Output, Progress

DEFAULT_URL = os.environ.get(
    "JOBGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
STATEMENTS_PER_JOB = 6  # one round trip each: create, claim, 3 records, finish


async def lifecycle(store: PostgresJobStore, owner: str) -> float:
    """Runs one job from creation to SUCCEEDED; returns how long it took, in ms."""
    began = time.perf_counter()
    job, _ = await store.create(
        NewJob(
            id=uuid.uuid4().hex,
            owner=owner,
            model="local/echo",
            input=JobInput(prompt="noop"),
            create_time=datetime.now(UTC),
        )
    )
    claimed = await store.claim(job.id)
    if claimed is None:
        raise RuntimeError(f"job {job.id} could not be claimed")
    attempt = claimed[0].attempt
    for payload in (Progress(0.5), LogLine("working"), Output("text", text="noop")):
        await store.record(job.id, attempt, payload)
    if await store.finish(job.id, attempt, JobState.SUCCEEDED) is None:
        raise RuntimeError(f"job {job.id} could not be finished")
    return (time.perf_counter() - began) * 1000


async def run(store: PostgresJobStore, jobs: int, in_flight: int) -> tuple[float, list[float]]:
    remaining = iter(range(jobs))
    latencies: list[float] = []

    async def lane(index: int) -> None:
        for _ in remaining:
            latencies.append(await lifecycle(store, f"owner-{index % 10}"))

    started = time.perf_counter()
    await asyncio.gather(*(lane(i) for i in range(in_flight)))
    return jobs / (time.perf_counter() - started), latencies


async def measure(args: argparse.Namespace) -> list[Result]:
    database = f"jobgate_bench_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(args.url, timeout=5)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        url = urlunsplit(urlsplit(args.url)._replace(path="/" + database))
        store = await PostgresJobStore.open(url, pool_size=args.pool_size)
        try:
            await run(store, min(args.jobs, 500), args.in_flight)  # warm-up: pool, statements
            jobs_per_second, latencies = await run(store, args.jobs, args.in_flight)
        finally:
            await store.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    label = f"{args.in_flight} in flight, pool {args.pool_size}"
    return [
        Result(f"job lifecycles/s ({label})", jobs_per_second, "jobs/s"),
        Result("store statements/s", jobs_per_second * STATEMENTS_PER_JOB, "statements/s"),
        Result("lifecycle p50", percentile(latencies, 0.5), "ms"),
        Result("lifecycle p99", percentile(latencies, 0.99), "ms"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="a PostgreSQL server to bench on")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs in the measured run")
    parser.add_argument("--in-flight", type=int, default=50, help="jobs in flight at once")
    parser.add_argument("--pool-size", type=int, default=DEFAULT_POOL_SIZE, help="connections")
    parser.add_argument("--out", type=Path, default=Path("bench/results/postgres_store.json"))
    args = parser.parse_args()
    results = asyncio.run(measure(args))
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([r.__dict__ for r in results], indent=2))


if __name__ == "__main__":
    main()
