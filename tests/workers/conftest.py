"""Fixtures for the worker tests: the real embedded backends under tmp_path, and workers that
are stopped at the end of each test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import pytest

from core.backends import Backends, open_backends
from core.providers.base import Provider
from core.providers.local import LocalProvider
from core.providers.registry import ProviderRegistry
from core.settings import Settings
from workers.runtime import Worker

StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def backends(tmp_path: Path) -> AsyncIterator[Backends]:
    settings = Settings(data_dir=tmp_path / "data", blob_http_listen="127.0.0.1:0")
    settings.data_dir.mkdir(parents=True)
    opened = await open_backends(
        settings, ProviderRegistry([LocalProvider()]).catalog, serves_api=False
    )
    yield opened
    await opened.close()


@pytest.fixture
async def start_worker(backends: Backends) -> AsyncIterator[StartWorker]:
    """start_worker(*extra_providers, concurrency=4, models=None, **options) runs a Worker with
    the local providers plus `extra_providers` (and Worker `options`, e.g. a lease) until the end
    of the test."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(
        *providers: Provider,
        concurrency: int = 4,
        models: Collection[str] | None = None,
        **options: Any,
    ) -> Worker:
        registry = ProviderRegistry([LocalProvider(), *providers])
        worker = Worker(backends, registry, concurrency=concurrency, models=models, **options)
        running.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, task in reversed(running):
        await worker.stop(0)
        await task
