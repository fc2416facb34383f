"""`jobgate dev`: the server and the workers in one process, on the embedded backends."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from core.backends import Backends, open_backends
from core.billing import Scope
from core.ports import JobMessage
from core.providers.registry import builtin_registry
from core.settings import Settings
from launcher.accounts import local_free_key
from server.app import JobgateServer
from workers.runtime import Worker

log = logging.getLogger(__name__)

DEV_OWNER = "dev"
DEV_KEY_FILE = "dev-api-key"
# Ten currency units for models that are not free on the dev tariff (every non-local one).
DEV_WELCOME_MICROS = 10_000_000
# The in-process broker starts empty; a restart re-queues every unfinished job from the store.
REQUEUE_LIMIT = 1_000_000


@dataclass(frozen=True)
class Endpoint:
    address: str
    api_key: str
    data_dir: Path


class EmbeddedService:
    """One process: JobgateServer + Worker sharing one set of embedded backends."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._backends: Backends | None = None
        self._server: JobgateServer | None = None
        self._worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None

    async def start(self) -> Endpoint:
        registry = builtin_registry(self.settings)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._backends = await open_backends(self.settings, registry.catalog, serves_api=True)
        api_key = await dev_api_key(self._backends, self.settings.data_dir)
        await requeue_unfinished(self._backends)
        self._worker = Worker.from_settings(self._backends, registry, self.settings)
        self._worker_task = asyncio.create_task(self._worker.run(), name="jobgate-worker")
        self._server = JobgateServer(self.settings, self._backends)
        port = await self._server.start()
        host = self.settings.listen.rsplit(":", 1)[0]
        return Endpoint(f"{host}:{port}", api_key, self.settings.data_dir)

    async def stop(self) -> None:
        """Drains in dependency order: no new calls, then no new work, then the backends."""
        grace = self.settings.shutdown_grace_seconds
        if self._server is not None:
            await self._server.stop(grace)
        if self._worker is not None:
            await self._worker.stop(grace)
        if self._worker_task is not None:
            await self._worker_task
        if self._backends is not None:
            await self._backends.close()


async def dev_api_key(backends: Backends, data_dir: Path) -> str:
    """The dev key, kept in a 0600 file so every start prints the same one; made on first start.

    It has both scopes, so `jobgate admin` works with it too; its user runs the local models
    free and without limits, with a welcome balance for any other."""
    path = data_dir / DEV_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        principal = await backends.accounts.authenticate(key)
        if principal is not None and Scope.ADMIN in principal.scopes:
            return key
    key = await local_free_key(
        backends.accounts,
        backends.catalog,
        DEV_OWNER,
        scopes=(Scope.JOBS, Scope.ADMIN),
        welcome_micros=DEV_WELCOME_MICROS,
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return key


async def requeue_unfinished(backends: Backends) -> None:
    """Publishes every QUEUED or RUNNING job again: the in-process broker forgot them when the
    last process stopped. A RUNNING one runs again as its next attempt."""
    jobs = await backends.jobs.unfinished(limit=REQUEUE_LIMIT)
    for job in jobs:
        await backends.broker.publish(JobMessage(job_id=job.id, model=job.model))
    if jobs:
        log.info("re-queued %d unfinished jobs", len(jobs))


def banner(endpoint: Endpoint) -> str:
    create = '{"job": {"model": "local/echo", "input": {"prompt": "hello"}}}'
    return "\n".join(
        [
            "jobgate dev: server and workers in one process, embedded backends",
            f"  address  {endpoint.address}",
            f"  api key  {endpoint.api_key}",
            f"  data     {endpoint.data_dir}",
            "",
            "Try it from another terminal:",
            f"  export JOBGATE_ADDRESS={endpoint.address} JOBGATE_API_KEY={endpoint.api_key}",
            "  .venv/bin/jobgate submit local/sleep --duration 3 --watch",
            f"  grpcurl -plaintext -H 'authorization: Bearer {endpoint.api_key}' \\",
            f"    -d '{create}' \\",
            f"    {endpoint.address} jobgate.v1.JobService/CreateJob",
            "",
            "Ctrl-C stops it; jobs and keys stay in the data directory.",
        ]
    )


def read_banner(lines: Iterable[str]) -> tuple[str, str]:
    """The address and API key a `jobgate dev` process printed, read up to the key's line: for
    tools that start it as a process. ValueError if its output ends before."""
    seen: dict[str, str] = {}
    for line in lines:
        label, _, value = line.strip().rpartition("  ")
        if label.strip() in ("address", "api key"):
            seen[label.strip()] = value.strip()
        if "api key" in seen:
            break
    if "address" not in seen or "api key" not in seen:
        raise ValueError(f"jobgate dev printed no address and key: {seen}")
    return seen["address"], seen["api key"]


def dev_settings(settings: Settings, listen: str | None, data_dir: Path | None) -> Settings:
    """Command-line flags over the environment."""
    if data_dir is not None:
        # Store URLs follow the data directory unless set explicitly.
        settings = Settings.from_env({**os.environ, "JOBGATE_DATA_DIR": str(data_dir)})
    if listen is not None:
        settings = replace(settings, listen=listen)
    return settings
