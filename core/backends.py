"""Opens each port's adapter from its URL in Settings: the scheme picks the backend."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

from pymongo.errors import ConfigurationError, PyMongoError

from core.adapters.blob_keys import load_or_create_secret
from core.adapters.local_blobs import LocalBlobStore
from core.adapters.memory_broker import MemoryBroker
from core.adapters.memory_events import MemoryEventBus
from core.adapters.mongo_jobs import MongoJobStore
from core.adapters.postgres import CannotOpen
from core.adapters.postgres_accounts import PostgresAccountStore
from core.adapters.postgres_jobs import PostgresJobStore
from core.adapters.rabbitmq import QueueType, RabbitError, Topology
from core.adapters.rabbitmq_broker import RabbitBroker
from core.adapters.rabbitmq_events import ALL_EVENTS, CANCELS, RabbitEventBus
from core.adapters.s3_blobs import CannotOpen as S3CannotOpen
from core.adapters.s3_blobs import S3BlobStore, S3Config
from core.adapters.sqlite_accounts import SqliteAccountStore
from core.adapters.sqlite_jobs import SqliteJobStore
from core.catalog import Catalog
from core.errors import ConfigError
from core.ports import AccountStore, BlobStore, Broker, EventBus, JobStore
from core.settings import ENV_PREFIX, Settings


class _Closeable(Protocol):
    async def close(self) -> None: ...


T = TypeVar("T", bound=_Closeable)


@dataclass
class Backends:
    """Everything the server and the workers talk to, opened once per process."""

    jobs: JobStore
    accounts: AccountStore
    broker: Broker
    events: EventBus
    blobs: BlobStore
    catalog: Catalog

    async def close(self) -> None:
        for port in (self.broker, self.events, self.jobs, self.accounts, self.blobs):
            await port.close()


@dataclass(frozen=True)
class _Target:
    """One backend to open: the setting naming it, its parsed URL, and the process's settings."""

    setting: str
    value: str
    url: SplitResult
    settings: Settings
    serves_api: bool
    catalog: Catalog

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.setting.upper()

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.env_var}={self.value!r}: {problem}")

    def absolute_path(self, example: str) -> Path:
        url = self.url
        path = unquote(url.path)
        if url.netloc or url.query or url.fragment or not path.startswith("/") or path == "/":
            raise self.error(f"expected an absolute path, like {example}")
        return Path(path)


@dataclass(frozen=True)
class _Adapter(Generic[T]):
    example: str
    open: Callable[[_Target], Awaitable[T]]


async def _open_sqlite_jobs(target: _Target) -> JobStore:
    path = target.absolute_path("sqlite:///var/lib/jobgate/jobs.db")
    return await _opening(target, SqliteJobStore.open(_with_parent(target, path)))


async def _open_sqlite_accounts(target: _Target) -> AccountStore:
    path = target.absolute_path("sqlite:///var/lib/jobgate/accounts.db")
    return await _opening(target, SqliteAccountStore.open(_with_parent(target, path)))


async def _open_mongo_jobs(target: _Target) -> JobStore:
    try:
        return await MongoJobStore.open(target.value)
    except (ConfigurationError, ValueError) as exc:  # the driver's URL parser raises both
        raise target.error(f"malformed MongoDB URL: {exc}") from None
    except (ConnectionError, PyMongoError) as exc:
        raise target.error(str(exc)) from None


async def _open_postgres_jobs(target: _Target) -> JobStore:
    try:
        return await PostgresJobStore.open(target.value)
    except CannotOpen as exc:
        raise target.error(str(exc)) from None


async def _open_postgres_accounts(target: _Target) -> AccountStore:
    try:
        return await PostgresAccountStore.open(target.value)
    except CannotOpen as exc:
        raise target.error(str(exc)) from None


async def _open_memory_broker(target: _Target) -> Broker:
    return MemoryBroker()


def rabbitmq_topology(settings: Settings) -> Topology:
    """The RabbitMQ exchange and queue layout that `settings` ask for."""
    try:
        return Topology(
            prefix=settings.rabbitmq_prefix,
            queue_type=QueueType(settings.rabbitmq_queue_type),
            max_attempts=settings.max_attempts,
        )
    except ValueError as exc:
        raise ConfigError(f"RabbitMQ topology (JOBGATE_RABBITMQ_*): {exc}") from None


async def _open_rabbitmq_broker(target: _Target) -> Broker:
    # Every catalog model gets its queue now, so no publish of a known model is unroutable.
    models = [spec.id for spec in target.catalog]
    try:
        return await RabbitBroker.open(
            target.value, topology=rabbitmq_topology(target.settings), models=models
        )
    except RabbitError as exc:
        raise ConfigError(f"{target.env_var}: {exc}") from None


async def _open_rabbitmq_events(target: _Target) -> EventBus:
    try:
        return await RabbitEventBus.open(
            target.value,
            topology=rabbitmq_topology(target.settings),
            interest=ALL_EVENTS if target.serves_api else CANCELS,
        )
    except RabbitError as exc:
        raise ConfigError(f"{target.env_var}: {exc}") from None


async def _open_memory_events(target: _Target) -> EventBus:
    return MemoryEventBus()


async def _open_local_blobs(target: _Target) -> BlobStore:
    root = _with_parent(target, target.absolute_path("file:///var/lib/jobgate/blobs"))
    settings = target.settings
    secret_path = settings.data_dir / BLOB_SECRET_FILE
    try:
        secret = load_or_create_secret(secret_path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"blob signing secret {secret_path}: {exc}") from exc
    host, port = _host_port("blob_http_listen", settings.blob_http_listen)
    store = LocalBlobStore(root, "" if target.serves_api else f"http://{host}:{port}", secret)
    if target.serves_api:
        try:
            await store.start_server(host, port)
        except OSError as exc:
            raise ConfigError(
                f"{ENV_PREFIX}BLOB_HTTP_LISTEN={settings.blob_http_listen!r}: cannot listen: {exc}"
            ) from exc
    return store


async def _open_s3_blobs(target: _Target) -> BlobStore:
    url, settings = target.url, target.settings
    if url.query or url.fragment or "@" in url.netloc or not url.hostname:
        raise target.error("expected s3://BUCKET or s3://BUCKET/PREFIX")
    endpoint, public = settings.s3_endpoint_url, settings.s3_public_endpoint_url
    for name, value in (("S3_ENDPOINT_URL", endpoint), ("S3_PUBLIC_ENDPOINT_URL", public)):
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ConfigError(
                f"{ENV_PREFIX}{name}={value!r}: expected http://host:port or https://..."
            )
    if bool(settings.s3_access_key_id) != bool(settings.s3_secret_access_key):
        raise ConfigError(
            f"{ENV_PREFIX}S3_ACCESS_KEY_ID and {ENV_PREFIX}S3_SECRET_ACCESS_KEY go together: "
            "set both, or neither to use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    try:
        config = S3Config(
            bucket=url.netloc,
            prefix=unquote(url.path).strip("/"),
            endpoint_url=endpoint or None,
            region=settings.s3_region or None,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=settings.s3_secret_access_key or None,
            create_bucket=settings.s3_create_bucket,
            public_endpoint_url=public or None,
        )
        return await S3BlobStore.open(config)
    except (ValueError, S3CannotOpen) as exc:
        raise target.error(str(exc)) from None


# Each port's adapters by URL scheme; production backends add their schemes here.
JOB_STORES: dict[str, _Adapter[JobStore]] = {
    "sqlite": _Adapter("sqlite:///path", _open_sqlite_jobs),
    "mongodb": _Adapter("mongodb://host/database", _open_mongo_jobs),
    "mongodb+srv": _Adapter("mongodb+srv://host/database", _open_mongo_jobs),
    "postgresql": _Adapter("postgresql://host/database", _open_postgres_jobs),
    "postgres": _Adapter("postgresql://host/database", _open_postgres_jobs),
}
ACCOUNT_STORES: dict[str, _Adapter[AccountStore]] = {
    "sqlite": _Adapter("sqlite:///path", _open_sqlite_accounts),
    "postgresql": _Adapter("postgresql://host/database", _open_postgres_accounts),
    "postgres": _Adapter("postgresql://host/database", _open_postgres_accounts),
}
BROKERS: dict[str, _Adapter[Broker]] = {
    "memory": _Adapter("memory://", _open_memory_broker),
    "amqp": _Adapter("amqp://user:password@host/vhost", _open_rabbitmq_broker),
    "amqps": _Adapter("amqp://user:password@host/vhost", _open_rabbitmq_broker),
}
# The event bus rides on the broker's transport, so the broker URL's scheme picks it too.
EVENT_BUSES: dict[str, _Adapter[EventBus]] = {
    "memory": _Adapter("memory://", _open_memory_events),
    "amqp": _Adapter("amqp://user:password@host/vhost", _open_rabbitmq_events),
    "amqps": _Adapter("amqp://user:password@host/vhost", _open_rabbitmq_events),
}
BLOB_STORES: dict[str, _Adapter[BlobStore]] = {
    "file": _Adapter("file:///path", _open_local_blobs),
    "s3": _Adapter("s3://bucket/prefix", _open_s3_blobs),
}
BLOB_SECRET_FILE = "blob-secret"


async def open_backends(settings: Settings, catalog: Catalog, *, serves_api: bool) -> Backends:
    """Opens every port's adapter named by `settings`; on any failure closes those already open.

    `serves_api` says the process serves the API (a server, or `jobgate dev`): a local blob store
    then serves its signed download URLs over HTTP on `settings.blob_http_listen`, and the event
    bus brings every job's events, for WatchJob streams on any job. A worker (False) needs only
    cancels.
    """

    async with AsyncExitStack() as stack:

        async def open_port(setting: str, value: str, adapters: dict[str, _Adapter[T]]) -> T:
            target = _Target(setting, value, _split(setting, value), settings, serves_api, catalog)
            port = await _choose(target, adapters).open(target)
            stack.push_async_callback(port.close)
            return port

        backends = Backends(
            jobs=await open_port("job_store_url", settings.job_store_url, JOB_STORES),
            accounts=await open_port(
                "account_store_url", settings.account_store_url, ACCOUNT_STORES
            ),
            broker=await open_port("broker_url", settings.broker_url, BROKERS),
            events=await open_port("broker_url", settings.broker_url, EVENT_BUSES),
            blobs=await open_port("blob_store_url", settings.blob_store_url, BLOB_STORES),
            catalog=catalog,
        )
        stack.pop_all()
    return backends


def _split(setting: str, value: str) -> SplitResult:
    try:
        return urlsplit(value)
    except ValueError as exc:
        raise ConfigError(
            f"{ENV_PREFIX}{setting.upper()}={value!r}: malformed URL: {exc}"
        ) from None


def _choose(target: _Target, adapters: dict[str, _Adapter[T]]) -> _Adapter[T]:
    scheme = target.url.scheme
    if scheme not in adapters:
        # Aliases of one scheme share their example: name it once.
        expected = " or ".join(dict.fromkeys(a.example for a in adapters.values()))
        raise target.error(f"unsupported scheme {scheme!r} (expected {expected})")
    return adapters[scheme]


def _with_parent(target: _Target, path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise target.error(f"cannot create {path.parent}: {exc}") from exc
    return path


async def _opening(target: _Target, opening: Awaitable[T]) -> T:
    try:
        return await opening
    except sqlite3.Error as exc:
        raise target.error(f"cannot open the database: {exc}") from exc


def _host_port(setting: str, value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{ENV_PREFIX}{setting.upper()}={value!r}: expected host:port")
    return host, int(port)
