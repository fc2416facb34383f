"""Fixtures for the server tests: a real JobgateServer on a free port over real embedded backends
under tmp_path, two callers with their own keys, and a hand doing a worker's part."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from jobgate.v1 import job_service_pb2_grpc

from core.backends import Backends, open_backends
from core.catalog import Catalog, InputSpec, ModelSpec, OutputKind
from core.providers.registry import builtin_registry
from core.settings import Settings
from server.app import JobgateServer
from tests.server.support import ActingWorker, Metadata, Stub, funded_key

# No built-in model takes input files; this one does, to test blob references.
FILES_MODEL = ModelSpec(
    id="test/files",
    display_name="Files",
    description="Takes input files.",
    inputs=(InputSpec("files", required=True), InputSpec("prompt")),
    outputs=(OutputKind.TEXT,),
)


@dataclass(frozen=True)
class Running:
    server: JobgateServer
    address: str


StartServer = Callable[..., Awaitable[Running]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Free ports, and keepalives rare enough to stay out of the way unless a test wants them."""
    return Settings(
        data_dir=tmp_path / "data",
        listen="127.0.0.1:0",
        blob_http_listen="127.0.0.1:0",
        keepalive_seconds=30.0,
        max_request_bytes=64 * 1024,
        shutdown_grace_seconds=1.0,
    )


@pytest.fixture
async def backends(settings: Settings) -> AsyncIterator[Backends]:
    settings.data_dir.mkdir(parents=True)
    catalog = Catalog([*builtin_registry().catalog, FILES_MODEL])
    opened = await open_backends(settings, catalog, serves_api=True)
    yield opened
    await opened.close()


@pytest.fixture
async def start_server(settings: Settings, backends: Backends) -> AsyncIterator[StartServer]:
    """start_server(**settings_changes) runs a JobgateServer until the end of the test."""
    started: list[JobgateServer] = []

    async def start(**changes: object) -> Running:
        server = JobgateServer(replace(settings, **changes), backends)
        started.append(server)
        port = await server.start()
        return Running(server, f"127.0.0.1:{port}")

    yield start
    for server in started:
        await server.stop(0)


@pytest.fixture
async def running(start_server: StartServer) -> Running:
    return await start_server()


@pytest.fixture
async def channel(running: Running) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(running.address) as opened:
        yield opened


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> Stub:
    return job_service_pb2_grpc.JobServiceStub(channel)


async def _auth(backends: Backends, owner: str) -> Metadata:
    return (("authorization", f"Bearer {await funded_key(backends, owner)}"),)


@pytest.fixture
async def alice(backends: Backends) -> Metadata:
    return await _auth(backends, "alice")


@pytest.fixture
async def bob(backends: Backends) -> Metadata:
    return await _auth(backends, "bob")


@pytest.fixture
def worker(backends: Backends) -> ActingWorker:
    return ActingWorker(backends)
