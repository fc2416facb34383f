"""The production-stack benchmark, in one run, against what people would otherwise pick.

jobgate: `python -m server` + 2 `python -m workers` processes on RabbitMQ, with the job store on
PostgreSQL and on MongoDB (SecantusDB, reported beside its own ceiling), accounts on PostgreSQL.
No-op jobs (local/echo) go server -> RabbitMQ -> worker -> job store -> watcher.
Beside it, on the same RabbitMQ: Celery (2 worker processes, acks_late, confirmed publishes)
without and with a result backend, and raw aio-pika (the ceiling). Then one server holding
5,000 idle WatchJob streams: its memory, and how long one event takes to reach all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from google.protobuf import duration_pb2
from jobgate.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

from bench.baselines import celery, raw_aio_pika
from bench.cpu import CpuMeter
from bench.embedded import create_latency, throughput
from bench.rabbit import scratch_vhost
from bench.service import RunningService
from bench.stats import Result, percentile, table
from core import event_loop
from core.adapters.postgres_accounts import PostgresAccountStore
from core.providers.registry import builtin_registry
from launcher.accounts import local_free_key
from launcher.local_cluster import local_cluster

POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGETS = {"create_p99_ms": 10.0, "idle_rss_mb": 500.0, "fanout_p99_ms": 100.0}
TARGET_RATE = 500.0  # CreateJob calls/s offered where the p99 target applies
# Streams open at about 400/s, what one server starts here while the rest of the stack runs:
# opened much faster, gRPC cancels some before the server gets to them.
OPEN_BATCH = 250
OPEN_PAUSE_SECONDS = 0.6
Processes = dict[str, int]  # pid by label


@contextlib.contextmanager
def scratch_postgres() -> Iterator[str]:
    """A database of the run's own on the local PostgreSQL; dropped afterwards."""
    name = f"jobgate_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(POSTGRES)._replace(path=f"/{name}"))
    finally:
        asyncio.run(_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _api_key(accounts_url: str) -> str:
    store = await PostgresAccountStore.open(accounts_url)
    try:
        # Free local models, no limits: jobs take the hot path with no hold, as before billing.
        return await local_free_key(store, builtin_registry().catalog, "bench")
    finally:
        await store.close()


@contextlib.contextmanager
def jobgate_stack(
    job_store: str, concurrency: int, queue_type: str = "quorum"
) -> Iterator[tuple[RunningService, Processes]]:
    """The whole production stack on scratch resources, and its processes by label;
    `job_store` is "postgresql" or a mongodb:// URL."""
    with (
        scratch_vhost("jobgate-bench") as amqp,
        scratch_postgres() as postgres,
        tempfile.TemporaryDirectory(prefix="jobgate-bench-") as data,
    ):
        env = {
            "JOBGATE_DATA_DIR": data,
            "JOBGATE_BROKER_URL": amqp,
            "JOBGATE_JOB_STORE_URL": postgres if job_store == "postgresql" else job_store,
            "JOBGATE_ACCOUNT_STORE_URL": postgres,
            "JOBGATE_BLOB_HTTP_LISTEN": "127.0.0.1:0",
            "JOBGATE_WORKER_CONCURRENCY": str(concurrency),
            "JOBGATE_RABBITMQ_QUEUE_TYPE": queue_type,
        }
        # Migrations run once here, before the processes race to apply them.
        key = asyncio.run(_api_key(postgres))
        with local_cluster(env, workers=2) as cluster:
            processes = {"server": cluster.server.pid, "load generator": os.getpid()}
            processes |= {f"worker {n}": w.pid for n, w in enumerate(cluster.workers, 1)}
            yield RunningService(cluster.address, key, cluster.server.pid), processes


async def jobgate_rows(
    stack: tuple[RunningService, Processes],
    label: str,
    args: argparse.Namespace,
    streams: int = 0,
) -> tuple[float, list[Result]]:
    """Throughput and its CPU, then (with `streams`) the idle-streams run, then CreateJob
    latency at each offered rate, lowest first: a backlog would disturb anything after it."""
    service, processes = stack
    meter = CpuMeter(processes)
    jobs_per_second = await throughput(service, args.jobs, args.in_flight, args.channels, meter)
    idle = await idle_streams(service, streams, args.channels * 4) if streams else []
    latency_rows = []
    for rate in sorted(args.rate):
        latency_rows += latency_results(
            label, rate, await create_latency(service, rate, args.seconds), rate == TARGET_RATE
        )
    return jobs_per_second, [
        *idle,
        Result(f"jobgate ({label}) end to end", jobs_per_second, "jobs/s"),
        *cpu_rows(meter, args.jobs, label),
        *latency_rows,
    ]


def latency_results(label: str, rate: float, latencies: list[float], judged: bool) -> list[Result]:
    p99 = percentile(latencies, 0.99)
    refused = sum(1 for latency in latencies if latency == float("inf"))
    name = f"jobgate ({label}) CreateJob"
    return [
        Result(f"{name} p50 @ {rate:.0f}/s", percentile(latencies, 0.5), "ms"),
        Result(
            f"{name} p99 @ {rate:.0f}/s",
            p99,
            "ms",
            f"< {TARGETS['create_p99_ms']:.0f} ms" if judged else "",
            p99 < TARGETS["create_p99_ms"] if judged else None,
        ),
        Result(f"{name} refused @ {rate:.0f}/s", refused, "calls"),
    ]


def cpu_rows(meter: CpuMeter, jobs: int, label: str) -> list[Result]:
    """Where the time goes: CPU milliseconds per job by process, and the rate that the
    machine's cores could sustain at that cost."""
    per_job = {name: 1000 * seconds / jobs for name, seconds in meter.spent.items()}
    total = sum(per_job.values())
    rows = [
        Result(f"jobgate ({label}) CPU per job: {name}", ms, "ms")
        for name, ms in sorted(per_job.items(), key=lambda item: -item[1])
    ]
    cores = os.cpu_count() or 1
    return [
        *rows,
        Result(f"jobgate ({label}) CPU per job: all", total, "ms"),
        Result(
            f"jobgate ({label}) bound by {cores} cores at that cost", 1000 * cores / total, "jobs/s"
        ),
    ]


async def idle_streams(service: RunningService, streams: int, channels: int) -> list[Result]:
    """Many watchers on one running job: the server's memory while they idle, and the delay
    from the worker recording the next progress event to each watcher receiving it."""
    pool = [grpc.aio.insecure_channel(service.address) for _ in range(channels)]
    stubs = [job_service_pb2_grpc.JobServiceStub(c) for c in pool]
    request = job_service_pb2.CreateJobRequest(
        job=job_pb2.Job(
            model="local/sleep",
            input=job_pb2.JobInput(duration=duration_pb2.Duration(seconds=60)),
        )
    )
    job = (await stubs[0].CreateJob(request, metadata=service.metadata)).job
    ready = 0
    all_ready = asyncio.Event()
    delays: list[float] = []
    all_measured = asyncio.Event()

    async def watch(stub: job_service_pb2_grpc.JobServiceStub) -> None:
        nonlocal ready
        call = stub.WatchJob(
            job_service_pb2.WatchJobRequest(name=job.name), metadata=service.metadata
        )
        async for message in call:
            if message.WhichOneof("update") == "job":
                ready += 1
                if ready == streams:
                    all_ready.set()
            elif all_ready.is_set() and message.event.HasField("progress"):
                sent = message.event.create_time.ToNanoseconds() / 1e9
                delays.append((time.time() - sent) * 1000)
                if len(delays) == streams:
                    all_measured.set()
                # Hung up only once every watcher has the event: closing thousands of streams
                # would load both ends while later watchers are still being measured.
                await all_measured.wait()
                call.cancel()
                return

    tasks = []
    for i in range(streams):
        tasks.append(asyncio.create_task(watch(stubs[i % channels])))
        if i % OPEN_BATCH == OPEN_BATCH - 1:
            await asyncio.sleep(OPEN_PAUSE_SECONDS)
    await asyncio.wait_for(all_ready.wait(), timeout=120)
    rss = _rss_mb(service.pid)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    for channel in pool:
        await channel.close()
    p99 = percentile(delays, 0.99)
    return [
        Result(
            f"server RSS with {streams:,} idle streams",
            rss,
            "MB",
            f"< {TARGETS['idle_rss_mb']:.0f} MB",
            rss < TARGETS["idle_rss_mb"],
        ),
        Result(f"one event to {len(delays):,} watchers p50", percentile(delays, 0.5), "ms"),
        Result(
            f"one event to {len(delays):,} watchers p99",
            p99,
            "ms",
            f"< {TARGETS['fanout_p99_ms']:.0f} ms",
            p99 < TARGETS["fanout_p99_ms"],
        ),
    ]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def measure(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    with scratch_vhost("jobgate-bench") as url:
        ceiling = event_loop.run(raw_aio_pika(url, args.jobs))
    with scratch_vhost("jobgate-bench") as url:
        bare = celery(url, args.jobs, backend="")
    with scratch_vhost("jobgate-bench") as url:
        with_backend = celery(url, args.jobs, backend="rpc://")
    with jobgate_stack("postgresql", args.concurrency) as stack:
        ours, rows = event_loop.run(jobgate_rows(stack, "PostgreSQL", args, args.streams))
        results += rows
    # Celery's queues are classic ones: the same kind of queue, for the like-for-like ratio.
    with jobgate_stack("postgresql", args.concurrency, "classic") as (service, processes):
        meter = CpuMeter(processes)
        classic = event_loop.run(
            throughput(service, args.jobs, args.in_flight, args.channels, meter)
        )
        label = "PostgreSQL, classic queues"
        results += [Result(f"jobgate ({label}) end to end", classic, "jobs/s")]
        results += cpu_rows(meter, args.jobs, label)
    if args.mongo_url:
        with jobgate_stack(args.mongo_url, args.concurrency) as stack:
            results += event_loop.run(jobgate_rows(stack, "MongoDB", args))[1]
    results += [
        Result(
            "Celery, no result backend",
            bare,
            "jobs/s",
            "jobgate (PostgreSQL) >= this",
            ours >= bare,
        ),
        Result("Celery, rpc:// result backend", with_backend, "jobs/s"),
        Result("raw aio-pika (ceiling)", ceiling, "msgs/s"),
        Result("jobgate (PostgreSQL) / Celery no backend", ours / bare, "x"),
        Result("jobgate (PostgreSQL) / Celery rpc backend", ours / with_backend, "x"),
        Result("jobgate (PostgreSQL) / raw aio-pika", ours / ceiling, "x"),
        Result("jobgate (classic queues) / Celery no backend", classic / bare, "x"),
    ]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000, help="no-op jobs per throughput run")
    parser.add_argument("--in-flight", type=int, default=200, help="jobgate jobs in flight")
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels for the load")
    parser.add_argument("--concurrency", type=int, default=64, help="per worker process")
    parser.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=[100, TARGET_RATE],
        help="offered CreateJob rates, /s; the target applies at 500/s",
    )
    parser.add_argument("--seconds", type=float, default=10, help="length of the latency run")
    parser.add_argument("--streams", type=int, default=5000, help="idle WatchJob streams")
    parser.add_argument(
        "--mongo-url",
        default="",
        help="also run on this MongoDB (a database "
        "URL, e.g. a SecantusDB started by `python -m bench.mongo_ceiling`)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/production.json"))
    args = parser.parse_args()
    results = measure(args)
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([r.__dict__ for r in results], indent=2))


if __name__ == "__main__":
    main()
