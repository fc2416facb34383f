"""Fixtures shared by every suite: a real jobgate, in one process, on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from jobgate.v1 import job_service_pb2_grpc

from core.settings import Settings
from launcher.embedded import EmbeddedService, Endpoint

# Fixtures for real services (started on demand, once per session).
pytest_plugins = [
    "tests.fixtures.mongo",
    "tests.fixtures.postgres",
    "tests.fixtures.rabbitmq",
    "tests.fixtures.s3",
]

REPO = Path(__file__).resolve().parent.parent


# The end-to-end suite runs once per job store: the same behaviour on every backend.
JOB_STORES = {
    "sqlite": None,  # the embedded default, under the data directory
    "mongodb": "mongo_database_url",
    "postgresql": "postgres_url",
}


@pytest.fixture(params=list(JOB_STORES))
def job_store_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty job store of each kind; "" means the embedded SQLite default."""
    fixture = JOB_STORES[request.param]
    return "" if fixture is None else str(request.getfixturevalue(fixture))


@pytest.fixture
def settings(tmp_path: Path, job_store_url: str) -> Settings:
    """Settings under tmp_path, on free ports, with each job store; tests adjust them with
    `replace`."""
    return Settings(
        data_dir=tmp_path / "data",
        job_store_url=job_store_url,
        listen="127.0.0.1:0",
        blob_http_listen="127.0.0.1:0",
        worker_concurrency=4,
        keepalive_seconds=1.0,
        shutdown_grace_seconds=2.0,
    )


@pytest.fixture
async def start_service() -> AsyncIterator[Callable[[Settings], object]]:
    """Starts EmbeddedServices on demand and stops whatever is still running at the end."""
    running: list[EmbeddedService] = []

    async def start(settings: Settings) -> tuple[EmbeddedService, Endpoint]:
        service = EmbeddedService(settings)
        running.append(service)
        return service, await service.start()

    yield start
    for service in reversed(running):
        await service.stop()


@pytest.fixture
async def service(
    settings: Settings, start_service: Callable[[Settings], object]
) -> AsyncIterator[tuple[EmbeddedService, Endpoint]]:
    yield await start_service(settings)  # type: ignore[misc]


@pytest.fixture
def endpoint(service: tuple[EmbeddedService, Endpoint]) -> Endpoint:
    return service[1]


@pytest.fixture
async def stub(endpoint: Endpoint) -> AsyncIterator[job_service_pb2_grpc.JobServiceStub]:
    async with grpc.aio.insecure_channel(endpoint.address) as channel:
        yield job_service_pb2_grpc.JobServiceStub(channel)


@pytest.fixture
def auth(endpoint: Endpoint) -> tuple[tuple[str, str]]:
    """Call metadata carrying the dev API key."""
    return (("authorization", f"Bearer {endpoint.api_key}"),)


def with_settings(settings: Settings, **changes: object) -> Settings:
    return replace(settings, **changes)
