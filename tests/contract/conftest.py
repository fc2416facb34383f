"""Fixtures for the port contract suites: each port's adapters, one test run per adapter.

Production adapters join by adding a `pytest.param` to a list below; the suites stay as they are.
Every factory opens its adapter over one backing location (a file, a database), so opening it a
second time sees what the first wrote: that is how persistence across a restart is tested.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import pytest

from core.adapters.local_blobs import LocalBlobStore
from core.adapters.memory_broker import MemoryBroker
from core.adapters.memory_events import MemoryEventBus
from core.adapters.mongo_jobs import MongoJobStore
from core.adapters.postgres_accounts import PostgresAccountStore
from core.adapters.postgres_jobs import PostgresJobStore
from core.adapters.rabbitmq_broker import RabbitBroker
from core.adapters.rabbitmq_events import RabbitEventBus
from core.adapters.s3_blobs import S3BlobStore
from core.adapters.sqlite_accounts import SqliteAccountStore
from core.adapters.sqlite_jobs import SqliteJobStore
from core.ports import AccountStore, BlobStore, Broker, EventBus, JobStore


class _Closeable(Protocol):
    async def close(self) -> None: ...


P = TypeVar("P", bound=_Closeable)

# Small, so the overflow test is quick; the bus drops its oldest events beyond it.
EVENT_QUEUE_LIMIT = 8


class Reopenable(Generic[P]):
    """Opens one adapter over the same backing store as often as a test likes; closes them all."""

    def __init__(self, open_port: Callable[[], Awaitable[P]]) -> None:
        self._open_port = open_port
        self._opened: list[P] = []

    async def open(self) -> P:
        port = await self._open_port()
        self._opened.append(port)
        return port

    async def close_all(self) -> None:
        for port in reversed(self._opened):
            await port.close()


def _local_blobs(request: pytest.FixtureRequest) -> Callable[[], Awaitable[BlobStore]]:
    root = Path(request.getfixturevalue("tmp_path")) / "blobs"

    async def open_store() -> BlobStore:
        store = LocalBlobStore(root, "", secret=b"contract-test-secret-0123456789ab")
        await store.start_server("127.0.0.1", 0)
        return store

    return open_store


def _s3_blobs(request: pytest.FixtureRequest) -> Callable[[], Awaitable[BlobStore]]:
    config = request.getfixturevalue("s3_config")
    return lambda: S3BlobStore.open(config)


def _sqlite_jobs(request: pytest.FixtureRequest) -> Callable[[], Awaitable[JobStore]]:
    path = Path(request.getfixturevalue("tmp_path")) / "jobs.db"
    return lambda: SqliteJobStore.open(path)


def _mongo_jobs(request: pytest.FixtureRequest) -> Callable[[], Awaitable[JobStore]]:
    url = request.getfixturevalue("mongo_database_url")
    return lambda: MongoJobStore.open(url)


def _postgres_jobs(request: pytest.FixtureRequest) -> Callable[[], Awaitable[JobStore]]:
    url = request.getfixturevalue("postgres_url")
    return lambda: PostgresJobStore.open(url)


def _sqlite_accounts(request: pytest.FixtureRequest) -> Callable[[], Awaitable[AccountStore]]:
    path = Path(request.getfixturevalue("tmp_path")) / "accounts.db"
    return lambda: SqliteAccountStore.open(path)


def _postgres_accounts(request: pytest.FixtureRequest) -> Callable[[], Awaitable[AccountStore]]:
    url = request.getfixturevalue("postgres_url")
    return lambda: PostgresAccountStore.open(url)


# Store factories take the test's request, so each can ask for the fixtures it needs.
JOB_STORES = [
    pytest.param(_sqlite_jobs, id="sqlite"),
    pytest.param(_mongo_jobs, id="mongodb"),
    pytest.param(_postgres_jobs, id="postgresql"),
]
ACCOUNT_STORES = [
    pytest.param(_sqlite_accounts, id="sqlite"),
    pytest.param(_postgres_accounts, id="postgresql"),
]
BLOB_STORES = [
    pytest.param(_local_blobs, id="local"),
    pytest.param(_s3_blobs, id="s3"),
]


async def _memory_broker(request: pytest.FixtureRequest) -> Broker:
    return MemoryBroker()


async def _rabbitmq_broker(request: pytest.FixtureRequest) -> Broker:
    return await RabbitBroker.open(
        request.getfixturevalue("rabbitmq_url"),
        topology=request.getfixturevalue("rabbitmq_topology"),
    )


BROKERS = [
    pytest.param(_memory_broker, id="memory"),
    pytest.param(_rabbitmq_broker, id="rabbitmq"),
]


async def _memory_event_bus(request: pytest.FixtureRequest) -> EventBus:
    return MemoryEventBus(queue_limit=EVENT_QUEUE_LIMIT)


async def _rabbitmq_event_bus(request: pytest.FixtureRequest) -> EventBus:
    return await RabbitEventBus.open(
        request.getfixturevalue("rabbitmq_url"),
        topology=request.getfixturevalue("rabbitmq_topology"),
        queue_limit=EVENT_QUEUE_LIMIT,
    )


EVENT_BUSES = [
    pytest.param(_memory_event_bus, id="memory"),
    pytest.param(_rabbitmq_event_bus, id="rabbitmq"),
]


@pytest.fixture(params=JOB_STORES)
async def job_stores(request: pytest.FixtureRequest) -> AsyncIterator[Reopenable[JobStore]]:
    stores: Reopenable[Any] = Reopenable(request.param(request))
    yield stores
    await stores.close_all()


@pytest.fixture
async def job_store(job_stores: Reopenable[JobStore]) -> JobStore:
    return await job_stores.open()


@pytest.fixture(params=ACCOUNT_STORES)
async def account_stores(request: pytest.FixtureRequest) -> AsyncIterator[Reopenable[AccountStore]]:
    stores: Reopenable[Any] = Reopenable(request.param(request))
    yield stores
    await stores.close_all()


@pytest.fixture
async def account_store(account_stores: Reopenable[AccountStore]) -> AccountStore:
    return await account_stores.open()


@pytest.fixture(params=BLOB_STORES)
async def blob_store(request: pytest.FixtureRequest) -> AsyncIterator[BlobStore]:
    stores: Reopenable[Any] = Reopenable(request.param(request))
    yield await stores.open()
    await stores.close_all()


@pytest.fixture
def model_name() -> Callable[[str], str]:
    """Model names unique to one test, so tests on a shared real broker never see each other."""
    run = uuid.uuid4().hex[:8]
    return lambda tag: f"test-{run}/{tag}"


@pytest.fixture(params=BROKERS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    broker = await request.param(request)
    yield broker
    await broker.close()


@pytest.fixture(params=EVENT_BUSES)
async def event_bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    bus = await request.param(request)
    yield bus
    await bus.close()
