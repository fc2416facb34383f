"""Production mode, end to end with real processes: one server and two workers on RabbitMQ,
MongoDB, PostgreSQL and S3. Jobs survive a worker killed mid-job and a dropped broker connection,
and every job is recorded exactly once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from jobgate.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

from core.adapters.postgres_accounts import PostgresAccountStore
from launcher.local_cluster import Cluster, local_cluster
from tests.e2e.helpers import events_of, wait_for_state, watch_all

Job = job_pb2.Job
DEFAULT_CONSUMER_TIMEOUT_MS = 1_800_000
CONSUMER_TIMEOUT_CHECK_SECONDS = 60
# What a worker logs when the broker took a delivery back before its ack.
TAKEN_BACK = "could not ack its delivery"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WATCH_DEADLINE_SECONDS = 150


@pytest.fixture
def extra_env() -> dict[str, str]:
    return {}


@pytest.fixture
def worker_concurrency() -> str:
    # Few writes in flight: SecantusDB's conditional updates slow down sharply with many.
    return "2"


@pytest.fixture
async def cluster_env(
    tmp_path: Path,
    rabbitmq_run: Any,
    mongo_database_url: str,
    postgres_url: str,
    s3_config: Any,
    worker_concurrency: str,
    extra_env: dict[str, str],
) -> tuple[dict[str, str], str]:
    """Settings for a cluster on this test's own queues, job database, schema and key prefix,
    and an API key made in its account store."""
    accounts = await PostgresAccountStore.open(postgres_url)
    try:
        key = await accounts.create_key("cluster-test")
        # Catalog prices: the cluster's jobs are held for and settled across processes.
        await accounts.top_up("cluster-test", 10**12, reference="cluster-test")
    finally:
        await accounts.close()
    env = {
        "JOBGATE_DATA_DIR": str(tmp_path),
        "JOBGATE_BROKER_URL": rabbitmq_run.url,
        "JOBGATE_RABBITMQ_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "JOBGATE_JOB_STORE_URL": mongo_database_url,
        "JOBGATE_ACCOUNT_STORE_URL": postgres_url,
        "JOBGATE_BLOB_STORE_URL": f"s3://{s3_config.bucket}/{s3_config.prefix}",
        "JOBGATE_S3_ENDPOINT_URL": s3_config.endpoint_url,
        "JOBGATE_S3_REGION": s3_config.region,
        "JOBGATE_S3_ACCESS_KEY_ID": s3_config.access_key_id or "",
        "JOBGATE_S3_SECRET_ACCESS_KEY": s3_config.secret_access_key or "",
        "JOBGATE_SHUTDOWN_GRACE_SECONDS": "2",
        "JOBGATE_WORKER_CONCURRENCY": worker_concurrency,
        # A killed worker's job restarts after this; short, so the tests do not wait long.
        "JOBGATE_JOB_LEASE_SECONDS": "2",
        **extra_env,
    }
    return env, key


@pytest.fixture
def servers() -> int:
    return 1


@pytest.fixture
def cluster(cluster_env: tuple[dict[str, str], str], servers: int) -> Iterator[tuple[Cluster, Any]]:
    env, key = cluster_env
    with local_cluster(env, workers=2, servers=servers) as running:
        yield running, (("authorization", f"Bearer {key}"),)


def request_for(index: int) -> job_service_pb2.CreateJobRequest:
    """A mix of the local models: mostly instant, some rendering a file, a few running with
    progress (ten events each: SecantusDB, standing in for MongoDB here, is slow)."""
    if index % 10 == 0:
        model = "local/sleep"
        job_input = job_pb2.JobInput(duration=duration_pb2.Duration(nanos=200_000_000))
    elif index % 10 < 4:
        model = "local/image"
        job_input = job_pb2.JobInput(prompt=f"image {index}", size="64x64")
    else:
        model = "local/echo"
        job_input = job_pb2.JobInput(prompt=f"echo {index}")
    return job_service_pb2.CreateJobRequest(
        job=job_pb2.Job(model=model, input=job_input), request_id=f"mix-{index}"
    )


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


async def run_and_watch(stub: Any, auth: Any, request: Any) -> tuple[Job, list[Any]]:
    job = await create_as_clients_do(stub, auth, request)
    # 200 jobs through SecantusDB (about 200 conditional writes/s) take a while on a busy machine.
    messages = await watch_all(stub, auth, job.name, deadline=WATCH_DEADLINE_SECONDS)
    done = await stub.GetJob(job_service_pb2.GetJobRequest(name=job.name), metadata=auth)
    return done.job, messages


async def create_as_clients_do(stub: Any, auth: Any, request: Any) -> Job:
    """CreateJob, retried with the same request_id while the service is UNAVAILABLE, as
    jobgate's clients do: the retry returns the job the first call recorded."""
    for _ in range(10):
        try:
            return (await stub.CreateJob(request, metadata=auth, timeout=30)).job
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(1)
    raise AssertionError("the service stayed unavailable")


def terminal_events(messages: Any) -> int:
    """How many recorded events ended the job: exactly one, whatever happened to its workers."""
    return sum(
        1
        for event in events_of(messages)
        if event.state_change.state in (Job.STATE_SUCCEEDED, Job.STATE_FAILED, Job.STATE_CANCELLED)
    )


@pytest.mark.timeout(WATCH_DEADLINE_SECONDS + 60)
async def test_two_hundred_mixed_jobs_all_succeed_and_their_files_download(cluster: Any) -> None:
    running, auth = cluster
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        results = await asyncio.gather(
            *(run_and_watch(stub, auth, request_for(i)) for i in range(200))
        )

    assert [job.state for job, _ in results] == [Job.STATE_SUCCEEDED] * 200
    images = [o.blob for job, _ in results for o in job.outputs if o.HasField("blob")]
    assert len(images) == 60
    bodies = await asyncio.gather(
        *(asyncio.to_thread(download, b.download_uri) for b in images[:10])
    )
    assert all(body.startswith(PNG_MAGIC) for body in bodies)


# No keepalive (and so no store re-read) for the watch's duration: only events the bus carries
# from the worker to the second server can reach the stream.
@pytest.mark.parametrize(("servers", "extra_env"), [(2, {"JOBGATE_KEEPALIVE_SECONDS": "600"})])
async def test_a_job_submitted_through_one_server_streams_every_event_through_another(
    cluster: Any,
) -> None:
    running, auth = cluster
    first, second = running.addresses
    request = job_service_pb2.CreateJobRequest(
        job=job_pb2.Job(
            model="local/sleep", input=job_pb2.JobInput(duration=duration_pb2.Duration(seconds=1))
        )
    )
    async with (
        grpc.aio.insecure_channel(first) as submit_channel,
        grpc.aio.insecure_channel(second) as watch_channel,
    ):
        job = (
            await job_service_pb2_grpc.JobServiceStub(submit_channel).CreateJob(
                request, metadata=auth
            )
        ).job
        watcher = job_service_pb2_grpc.JobServiceStub(watch_channel)
        messages = await watch_all(watcher, auth, job.name)

    sequences = [messages[0].job.event_sequence] + [e.sequence for e in events_of(messages)]
    assert sequences == list(range(sequences[0], sequences[-1] + 1))
    progress = [e for e in events_of(messages) if e.HasField("progress")]
    assert len(progress) >= 5
    assert events_of(messages)[-1].state_change.state == Job.STATE_SUCCEEDED


@pytest.mark.parametrize("worker_concurrency", ["1"])
async def test_a_job_whose_worker_is_killed_finishes_on_the_other_once(cluster: Any) -> None:
    running, auth = cluster
    request = job_service_pb2.CreateJobRequest(
        job=job_pb2.Job(
            model="local/sleep", input=job_pb2.JobInput(duration=duration_pb2.Duration(seconds=2))
        )
    )
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        # One job at a time per worker: with two running, each worker holds one of them.
        jobs = [(await stub.CreateJob(request, metadata=auth)).job for _ in range(2)]
        for job in jobs:
            await wait_for_state(stub, auth, job.name, Job.STATE_RUNNING)

        running.workers[0].send_signal(signal.SIGKILL)
        running.workers[0].wait(timeout=10)

        done = [await wait_for_state(stub, auth, j.name, Job.STATE_SUCCEEDED) for j in jobs]
        histories = [await watch_all(stub, auth, j.name, after=1) for j in jobs]

    assert sorted(job.attempt for job in done) == [1, 2]
    assert [terminal_events(history) for history in histories] == [1, 1]


async def test_jobs_survive_a_dropped_broker_connection(cluster: Any, rabbitmq_run: Any) -> None:
    running, auth = cluster
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        first = [
            asyncio.create_task(run_and_watch(stub, auth, request_for(3 * i + 2)))
            for i in range(20)
        ]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(rabbitmq_run.close_connections)
        later = [
            asyncio.create_task(run_and_watch(stub, auth, request_for(3 * i)))
            for i in range(30, 50)
        ]
        results = await asyncio.wait_for(asyncio.gather(*first, *later), timeout=120)

    assert [job.state for job, _ in results] == [Job.STATE_SUCCEEDED] * 40
    for job, _ in results:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            assert terminal_events(await watch_all(stub, auth, job.name, after=1)) == 1


def set_consumer_timeout(milliseconds: int) -> None:
    """Changes the broker's consumer_timeout at run time, no restart (as root, like the tests)."""
    expression = f"application:set_env(rabbit, consumer_timeout, {milliseconds})."
    subprocess.run(["rabbitmqctl", "eval", expression], check=True, capture_output=True, timeout=60)


@pytest.fixture
def short_consumer_timeout() -> Iterator[None]:
    """RabbitMQ takes back a delivery held longer than 5 s (it checks about once a minute). A
    channel reads the setting when it opens: request this fixture before the cluster."""
    set_consumer_timeout(5000)
    try:
        yield
    finally:
        set_consumer_timeout(DEFAULT_CONSUMER_TIMEOUT_MS)


@pytest.mark.parametrize(
    ("extra_env", "taken_back"),
    [
        # Handed off before the timeout: the broker never takes the delivery back.
        ({"JOBGATE_BROKER_HANDOFF_SECONDS": "2"}, False),
        # Held past it: the broker closes the channel and delivers the job again; the lease
        # keeps that copy from starting a second run.
        ({"JOBGATE_BROKER_HANDOFF_SECONDS": "600"}, True),
    ],
    ids=["handed-off", "taken-back"],
)
async def test_a_job_longer_than_the_consumer_timeout_runs_once_to_the_end(
    short_consumer_timeout: None, cluster: Any, taken_back: bool
) -> None:
    running, auth = cluster
    long_sleep = duration_pb2.Duration(seconds=CONSUMER_TIMEOUT_CHECK_SECONDS + 15)
    request = job_service_pb2.CreateJobRequest(
        job=job_pb2.Job(model="local/sleep", input=job_pb2.JobInput(duration=long_sleep))
    )
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        job = (await stub.CreateJob(request, metadata=auth)).job
        await watch_all(stub, auth, job.name, deadline=long_sleep.seconds + 60)
        history = events_of(await watch_all(stub, auth, job.name, after=1))

    started = [e.attempt for e in history if e.state_change.state == Job.STATE_RUNNING]
    assert started == [1]
    assert [e.state_change.state for e in history if e.HasField("state_change")][-1] == (
        Job.STATE_SUCCEEDED
    )
    assert (TAKEN_BACK in running.log_tail(100_000)) is taken_back
