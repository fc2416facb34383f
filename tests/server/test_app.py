"""The server as operators and tools see it: health, reflection, ports, faults, graceful stop."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from jobgate.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

from core.backends import Backends
from core.jobs import JobState
from core.ports import JobQuery
from tests.server.conftest import Running, StartServer
from tests.server.support import Metadata, Stub, create, job_request, rich_error

Health = health_pb2.HealthCheckResponse
JOB_SERVICE = "jobgate.v1.JobService"


async def test_health_answers_serving_without_a_key(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)

    for service in ("", JOB_SERVICE):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == Health.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_turns_not_serving_as_soon_as_stop_begins(
    start_server: StartServer,
) -> None:
    running = await start_server()
    async with grpc.aio.insecure_channel(running.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        call = health.Watch(health_pb2.HealthCheckRequest(service=JOB_SERVICE), timeout=5)
        before = await call.read()

        stopping = asyncio.create_task(running.server.stop(grace=0.5))
        during = await asyncio.wait_for(call.read(), timeout=2)
        await stopping

    assert before.status == Health.SERVING and during.status == Health.NOT_SERVING


def describe_through_reflection(address: str) -> tuple[list[str], dict[str, bool], list[str]]:
    """What a reflection client (like grpcurl) learns with no proto files at hand."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = list(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName(JOB_SERVICE)
        methods = {m.name: m.server_streaming for m in service.methods}
        job = pool.FindMessageTypeByName("jobgate.v1.Job")
        states = [v.name for v in job.enum_types_by_name["State"].values]
    return services, methods, states


async def test_reflection_lists_and_describes_the_services(running: Running) -> None:
    # A blocking client: it runs in a thread so this loop keeps serving it.
    services, methods, states = await asyncio.to_thread(
        describe_through_reflection, running.address
    )

    assert set(services) >= {
        JOB_SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert methods == {
        "CreateJob": False,
        "GetJob": False,
        "ListJobs": False,
        "CancelJob": False,
        "WatchJob": True,
        "RunJob": True,
        "ListModels": False,
        "CreateUpload": False,
    }
    assert "STATE_CANCELLED" in states


async def test_a_port_in_use_cannot_be_taken_twice(
    start_server: StartServer, running: Running
) -> None:
    with pytest.raises(OSError, match="cannot listen"):
        await start_server(listen=running.address)


async def test_a_store_fault_is_internal_and_keeps_its_details_to_the_log(
    stub: Stub, alice: Metadata, backends: Backends, caplog: pytest.LogCaptureFixture
) -> None:
    name = await create(stub, alice)
    await backends.jobs.close()

    with (
        caplog.at_level(logging.ERROR, logger="server.status"),
        pytest.raises(grpc.aio.AioRpcError) as caught,
    ):
        await stub.GetJob(job_service_pb2.GetJobRequest(name=name), metadata=alice)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INTERNAL and error.info.reason == "INTERNAL"
    assert "jobs.db" not in error.message and "closed" not in error.message
    (record,) = caplog.records
    assert record.exc_info is not None and record.getMessage().split()[-1] in error.message


async def test_stopping_leaves_no_job_recorded_but_not_queued(
    start_server: StartServer, alice: Metadata, backends: Backends
) -> None:
    running = await start_server()
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        await create(stub, alice)
        calls = [
            asyncio.ensure_future(stub.CreateJob(job_request(prompt=str(i)), metadata=alice))
            for i in range(40)
        ]
        await asyncio.sleep(0.005)
        await running.server.stop(grace=2)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)

    answered = {o.job.name.removeprefix("jobs/") for o in outcomes if not isinstance(o, Exception)}
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(answered) + len(refused) == len(calls)
    # Refused while draining (UNAVAILABLE), or never dispatched by the stopping gRPC core.
    assert {e.code() for e in refused} <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    recorded = await backends.jobs.list(JobQuery(owner="alice", limit=100, state=JobState.QUEUED))
    queued = []
    async with backends.broker.consume(None, prefetch=100) as deliveries:
        while len(queued) < len(recorded):
            delivery = await asyncio.wait_for(anext(deliveries), timeout=2)
            queued.append(delivery.message.job_id)
            await delivery.ack()
    assert sorted(queued) == sorted(job.id for job in recorded)
    assert answered <= set(queued)


async def test_after_stop_new_calls_are_refused(start_server: StartServer, alice: Metadata) -> None:
    running = await start_server()
    await running.server.stop(grace=0)

    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateJob(job_request(prompt="late"), metadata=alice, timeout=2)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_job_state_names_match_the_domain() -> None:
    assert [s.value for s in JobState] == [
        name.removeprefix("STATE_") for name in job_pb2.Job.State.keys()[1:]
    ]
