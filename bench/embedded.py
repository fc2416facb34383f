"""The embedded benchmark: `jobgate dev` in its own process, driven over gRPC from this one.

Measures, for no-op jobs (local/echo):
- jobs/s end to end: CreateJob, then WatchJob until the SUCCEEDED event, many jobs in flight;
- CreateJob latency p50/p99 at a fixed offered rate (open loop: calls start on schedule);
- progress-to-watcher delay: from a worker recording a progress event (its create_time) to a
  watcher receiving it, for local/sleep jobs.
Targets for this 2-core machine are in TARGETS; the report says which were met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc
from google.protobuf import duration_pb2
from jobgate.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

from bench.cpu import CpuMeter
from bench.load import offer
from bench.service import RunningService, embedded_service
from bench.stats import Result, percentile, table

TARGETS = {"throughput": 1000.0, "create_p99_ms": 10.0, "progress_p99_ms": 20.0}
SUCCEEDED = job_pb2.Job.STATE_SUCCEEDED


def echo_request() -> job_service_pb2.CreateJobRequest:
    return job_service_pb2.CreateJobRequest(
        job=job_pb2.Job(model="local/echo", input=job_pb2.JobInput(prompt="noop"))
    )


async def run_to_end(stub: job_service_pb2_grpc.JobServiceStub, service: RunningService) -> None:
    """One job created and watched to its end in one call, as the clients' run() does."""
    async for message in stub.RunJob(echo_request(), metadata=service.metadata):
        if message.event.state_change.state == SUCCEEDED:
            return
    raise RuntimeError("a job did not succeed")


async def throughput(
    service: RunningService, jobs: int, in_flight: int, channels: int, meter: CpuMeter | None = None
) -> float:
    """Jobs/s end to end after a warm-up; `meter`, if given, measures the CPU of that run."""
    pool = [grpc.aio.insecure_channel(service.address) for _ in range(channels)]
    stubs = [job_service_pb2_grpc.JobServiceStub(c) for c in pool]

    async def run(count: int, lanes: int) -> float:
        remaining = iter(range(count))

        async def lane(index: int) -> None:
            for _ in remaining:
                await run_to_end(stubs[index % channels], service)

        started = time.perf_counter()
        await asyncio.gather(*(lane(i) for i in range(lanes)))
        return time.perf_counter() - started

    await run(min(jobs, 500), in_flight)  # warm-up: connections, caches, SQLite pages
    if meter:
        meter.start()
    elapsed = await run(jobs, in_flight)
    if meter:
        meter.stop()
    for channel in pool:
        await channel.close()
    return jobs / elapsed


async def create_latency(service: RunningService, rate: float, seconds: float) -> list[float]:
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        await channel.channel_ready()  # the connection is not part of the first call's latency

        async def one() -> float:
            begin = time.perf_counter()
            try:
                await stub.CreateJob(echo_request(), metadata=service.metadata)
            except grpc.aio.AioRpcError:
                return float("inf")  # refused under overload: a miss at the worst latency
            return (time.perf_counter() - begin) * 1000

        return await offer(rate, seconds, one)


async def progress_delay(service: RunningService, jobs: int, seconds: float) -> list[float]:
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        delays: list[float] = []

        async def watch_one() -> None:
            request = job_service_pb2.CreateJobRequest(
                job=job_pb2.Job(
                    model="local/sleep",
                    input=job_pb2.JobInput(duration=duration_pb2.Duration(seconds=int(seconds))),
                )
            )
            job = (await stub.CreateJob(request, metadata=service.metadata)).job
            watch = job_service_pb2.WatchJobRequest(name=job.name)
            async for message in stub.WatchJob(watch, metadata=service.metadata):
                if message.WhichOneof("update") == "event" and message.event.HasField("progress"):
                    sent = message.event.create_time.ToNanoseconds() / 1e9
                    delays.append((time.time() - sent) * 1000)

        await asyncio.gather(*(watch_one() for _ in range(jobs)))
        return delays


async def measure(args: argparse.Namespace) -> list[Result]:
    with embedded_service(JOBGATE_WORKER_CONCURRENCY=str(args.concurrency)) as service:
        jobs_per_second = await throughput(service, args.jobs, args.in_flight, args.channels)
        latencies = await create_latency(service, args.rate, args.seconds)
        delays = await progress_delay(service, args.watchers, 3)
    return [
        Result(
            "end-to-end no-op jobs/s",
            jobs_per_second,
            "jobs/s",
            f">= {TARGETS['throughput']:,.0f}",
            jobs_per_second >= TARGETS["throughput"],
        ),
        Result(f"CreateJob p50 @ {args.rate:.0f}/s", percentile(latencies, 0.5), "ms"),
        Result(
            f"CreateJob p99 @ {args.rate:.0f}/s",
            percentile(latencies, 0.99),
            "ms",
            f"< {TARGETS['create_p99_ms']:.0f} ms",
            percentile(latencies, 0.99) < TARGETS["create_p99_ms"],
        ),
        Result("progress -> watcher p50", percentile(delays, 0.5), "ms"),
        Result(
            "progress -> watcher p99",
            percentile(delays, 0.99),
            "ms",
            f"< {TARGETS['progress_p99_ms']:.0f} ms",
            percentile(delays, 0.99) < TARGETS["progress_p99_ms"],
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs in the throughput run")
    parser.add_argument("--in-flight", type=int, default=200, help="jobs in flight at once")
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels for the load")
    parser.add_argument("--concurrency", type=int, default=64, help="worker concurrency")
    parser.add_argument("--rate", type=float, default=300, help="offered CreateJob rate, /s")
    parser.add_argument("--seconds", type=float, default=10, help="length of the latency run")
    parser.add_argument("--watchers", type=int, default=50, help="jobs watched for progress")
    parser.add_argument("--out", type=Path, default=Path("bench/results/embedded.json"))
    args = parser.parse_args()
    results = asyncio.run(measure(args))
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([r.__dict__ for r in results], indent=2))


if __name__ == "__main__":
    main()
