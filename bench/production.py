"""The production-stack benchmark, in one run, against what people would otherwise pick.

jobgate: `python -m server` + 2 `python -m workers` processes on RabbitMQ, with the job store on
PostgreSQL and on MongoDB (SecantusDB, reported beside its own ceiling), accounts on PostgreSQL.
No-op jobs (local/echo) go server -> RabbitMQ -> worker -> job store -> watcher.
Beside it, on the same RabbitMQ: Celery (2 worker processes, acks_late, confirmed publishes)
without and with a result backend, and raw aio-pika (the ceiling). Then one server holding
5,000 idle WatchJob streams: its memory, and how long one event takes to reach all of them.
CreateJob latency is judged on the gateway alone (workers stopped, as on machines of their own):
on 2 shared cores, no-op workers at full speed would take the cores the gateway answers with.
First, the floor: the same fan-out and unary calls on a bare grpcio server (bench.grpc_floor).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from google.protobuf import duration_pb2
from jobgate.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

from bench import grpc_floor
from bench.baselines import celery, raw_aio_pika
from bench.cpu import CpuMeter, wait_quiet
from bench.embedded import create_latency, throughput
from bench.load import Fanout, open_paced
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
    latency at each offered rate, lowest first, and on the gateway alone."""
    service, processes = stack
    meter = CpuMeter(processes)
    jobs_per_second = await throughput(service, args.jobs, args.in_flight, args.channels, meter)
    idle = await idle_streams(service, streams, args.channels * 4) if streams else []
    latency_rows = []
    for rate in sorted(args.rate):
        # Streams closing, or a backlog, would delay the next calls.
        await asyncio.to_thread(wait_quiet, service.pid)
        latencies = await create_latency(service, rate, args.seconds)
        latency_rows += latency_results(label, rate, latencies, judged=False)
    await asyncio.to_thread(wait_quiet, service.pid)
    # Last: the jobs it queues wait for the workers, and would load whatever came after.
    workers = [pid for name, pid in processes.items() if name.startswith("worker")]
    with paused(workers):
        alone = await create_latency(service, TARGET_RATE, args.seconds)
    latency_rows += latency_results(f"{label}, gateway alone", TARGET_RATE, alone, judged=True)
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


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """The gateway alone: workers stopped (SIGSTOP), their jobs waiting in the queue, as when
    the workers run on other machines and take none of this one's cores."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


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
    fanout = Fanout(streams)

    async def watch(index: int) -> None:
        call = stubs[index % channels].WatchJob(
            job_service_pb2.WatchJobRequest(name=job.name), metadata=service.metadata
        )
        async for message in call:
            if message.WhichOneof("update") == "job":
                fanout.ready()
            elif fanout.all_ready.is_set() and message.event.HasField("progress"):
                await fanout.received(message.event.create_time.ToNanoseconds() / 1e9)
                call.cancel()
                return

    tasks = await open_paced(streams, watch)
    await asyncio.wait_for(fanout.all_ready.wait(), timeout=120)
    rss = _rss_mb(service.pid)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    for channel in pool:
        await channel.close()
    delays = fanout.delays
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


def floor_rows(args: argparse.Namespace) -> list[Result]:
    """The same measures on a bare grpcio server (bench.grpc_floor): what no jobgate can beat."""
    with grpc_floor.floor_server() as (address, pid):
        delays = event_loop.run(grpc_floor.fanout(address, args.streams, args.channels * 4))
        wait_quiet(pid)
        latencies, cpu_ms = event_loop.run(
            grpc_floor.unary(address, pid, TARGET_RATE, args.seconds)
        )
    name = "bare grpcio floor:"
    fanout = f"{name} one message to {len(delays):,} streams"
    return [
        Result(f"{fanout} p50", percentile(delays, 0.5), "ms"),
        Result(f"{fanout} p99", percentile(delays, 0.99), "ms"),
        Result(f"{name} unary p50 @ {TARGET_RATE:.0f}/s", percentile(latencies, 0.5), "ms"),
        Result(f"{name} unary p99 @ {TARGET_RATE:.0f}/s", percentile(latencies, 0.99), "ms"),
        Result(f"{name} server CPU per unary call", cpu_ms, "ms"),
    ]


def measure(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = floor_rows(args) if args.streams else []
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
        default=[100],
        help="offered CreateJob rates, /s, with the workers running (the target applies to the "
        "gateway alone, at 500/s)",
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
