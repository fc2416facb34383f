"""Who may call what: every RPC of every jobgate service, with no key, a malformed, an unknown
and a revoked key, a key without the scope the service needs, and the right key. Another user's
job is reported exactly like a missing one.

The RPCs come from the services' descriptors, so an RPC added later is covered without
touching this file. Runs on the embedded SQLite account store and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from jobgate.v1 import account_service_pb2, admin_service_pb2, job_service_pb2, job_service_pb2_grpc

from core.backends import Backends
from core.billing import Scope
from core.settings import Settings
from tests.server.conftest import Running
from tests.server.support import Metadata, create, funded_key, rich_error

SERVICES = [
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"],
    account_service_pb2.DESCRIPTOR.services_by_name["AccountService"],
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
]
EVERY_RPC = [method for service in SERVICES for method in service.methods]
ADMIN_RPCS = {m.full_name for m in SERVICES[2].methods}
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    base = Settings(
        data_dir=tmp_path / "data",
        listen="127.0.0.1:0",
        blob_http_listen="127.0.0.1:0",
        shutdown_grace_seconds=1.0,
    )
    if request.param == "postgresql":
        return replace(base, account_store_url=request.getfixturevalue("postgres_url"))
    return base


@pytest.fixture
async def channel(running: Running) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(running.address) as opened:
        yield opened


async def call(
    channel: grpc.aio.Channel, method: descriptor.MethodDescriptor, auth: Metadata
) -> str:
    """Calls `method` with an empty request; the status code it ends with, and the reason of an
    UNAUTHENTICATED or PERMISSION_DENIED."""
    request = message_factory.GetMessageClass(method.input_type)()
    response_class: Any = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_class.FromString,
            )(request, metadata=auth, timeout=5)
            async for _ in stream:
                pass
        else:
            await channel.unary_unary(
                path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_class.FromString,
            )(request, metadata=auth, timeout=5)
    except grpc.aio.AioRpcError as error:
        if error.code() in REFUSED:
            return f"{error.code().name} {rich_error(error).info.reason}"
        return error.code().name
    return grpc.StatusCode.OK.name


async def outcomes(channel: grpc.aio.Channel, auth: Metadata) -> dict[str, str]:
    return {m.full_name: await call(channel, m, auth) for m in EVERY_RPC}


def everywhere(outcome: str) -> dict[str, str]:
    return {m.full_name: outcome for m in EVERY_RPC}


def passed_auth(result: str) -> bool:
    """The call got past the interceptor (whatever the empty request then earned)."""
    return result.split()[0] not in {code.name for code in REFUSED}


async def test_no_key_is_unauthenticated_everywhere(channel: grpc.aio.Channel) -> None:
    assert await outcomes(channel, ()) == everywhere("UNAUTHENTICATED API_KEY_MISSING")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Bearer", "API_KEY_MISSING"),
        ("Bearer ", "API_KEY_MISSING"),
        ("Basic jg_0123456789ab_secret", "API_KEY_MISSING"),
        ("jg_0123456789ab_secret", "API_KEY_MISSING"),
        ("Bearer x", "API_KEY_INVALID"),
        ("Bearer jg_nothex_secret", "API_KEY_INVALID"),
    ],
)
async def test_a_malformed_key_is_unauthenticated_everywhere(
    channel: grpc.aio.Channel, header: str, reason: str
) -> None:
    result = await outcomes(channel, (("authorization", header),))

    assert result == everywhere(f"UNAUTHENTICATED {reason}")


async def test_an_unknown_key_is_unauthenticated_everywhere(channel: grpc.aio.Channel) -> None:
    auth = (("authorization", "Bearer jg_0123456789ab_" + "x" * 43),)

    assert await outcomes(channel, auth) == everywhere("UNAUTHENTICATED API_KEY_INVALID")


async def test_a_revoked_key_is_unauthenticated_everywhere(
    channel: grpc.aio.Channel, backends: Backends
) -> None:
    key = await backends.accounts.create_key("alice", scopes=[Scope.JOBS, Scope.ADMIN])
    principal = await backends.accounts.authenticate(key)
    assert principal is not None
    await backends.accounts.revoke_key(principal.key_id)

    result = await outcomes(channel, (("authorization", f"Bearer {key}"),))

    assert result == everywhere("UNAUTHENTICATED API_KEY_INVALID")


async def test_a_jobs_key_may_not_call_the_admin_service(
    channel: grpc.aio.Channel, backends: Backends
) -> None:
    key = await funded_key(backends, "alice")

    result = await outcomes(channel, (("authorization", f"Bearer {key}"),))

    assert {rpc: r for rpc, r in result.items() if rpc in ADMIN_RPCS} == {
        rpc: "PERMISSION_DENIED API_KEY_SCOPE_MISSING" for rpc in ADMIN_RPCS
    }
    assert all(passed_auth(r) for rpc, r in result.items() if rpc not in ADMIN_RPCS)


async def test_an_admin_only_key_may_call_only_the_admin_service(
    channel: grpc.aio.Channel, backends: Backends
) -> None:
    key = await backends.accounts.create_key("root", scopes=[Scope.ADMIN])

    result = await outcomes(channel, (("authorization", f"Bearer {key}"),))

    assert {rpc: r for rpc, r in result.items() if rpc not in ADMIN_RPCS} == {
        m.full_name: "PERMISSION_DENIED API_KEY_SCOPE_MISSING"
        for m in EVERY_RPC
        if m.full_name not in ADMIN_RPCS
    }
    assert all(passed_auth(r) for rpc, r in result.items() if rpc in ADMIN_RPCS)


async def test_a_key_with_both_scopes_passes_everywhere(
    channel: grpc.aio.Channel, backends: Backends
) -> None:
    key = await backends.accounts.create_key("root", scopes=[Scope.JOBS, Scope.ADMIN])

    result = await outcomes(channel, (("authorization", f"Bearer {key}"),))

    assert all(passed_auth(r) for r in result.values()), result


async def test_another_users_job_is_not_found(
    channel: grpc.aio.Channel, backends: Backends
) -> None:
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    alice = (("authorization", f"Bearer {await funded_key(backends, 'alice')}"),)
    bob = (("authorization", f"Bearer {await funded_key(backends, 'bob')}"),)
    name = await create(jobs, bob)

    errors = []
    for attempt in (
        jobs.GetJob(job_service_pb2.GetJobRequest(name=name), metadata=alice),
        jobs.CancelJob(job_service_pb2.CancelJobRequest(name=name), metadata=alice),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await attempt
        errors.append(caught.value)
    with pytest.raises(grpc.aio.AioRpcError) as watched:
        async for _ in jobs.WatchJob(job_service_pb2.WatchJobRequest(name=name), metadata=alice):
            pass
    errors.append(watched.value)

    assert [(e.code(), rich_error(e).info.reason) for e in errors] == [
        (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    ] * 3
    assert (await jobs.GetJob(job_service_pb2.GetJobRequest(name=name), metadata=bob)).job.name
