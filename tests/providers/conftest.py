"""Fixtures for the provider tests: the real embedded backends (SQLite, the local blob store
serving its signed URLs, so fake providers can fetch input files as real ones would), a fake
provider API per test, and attempts run the way the worker runs them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.backends import Backends, open_backends
from core.catalog import Catalog
from core.jobs import BlobRef, Job, JobInput, NewJob
from core.ports import Claimed
from core.providers.base import Provider
from core.providers.registry import all_models
from core.settings import ProviderConfig, Settings
from tests.providers.fake_http import FakeApi
from tests.workers.conftest import start_worker  # noqa: F401 (a fixture used by these tests)
from tests.workers.helpers import OWNER
from workers.context import AttemptContext

SECRET = "sk-test-0123456789abcdef-SECRET"
KLING_SECRET = "kling-secret-key-DO-NOT-LEAK"


@pytest.fixture
async def backends(tmp_path: Path) -> AsyncIterator[Backends]:
    settings = Settings(data_dir=tmp_path / "data", blob_http_listen="127.0.0.1:0")
    settings.data_dir.mkdir(parents=True)
    opened = await open_backends(settings, Catalog(all_models()), serves_api=True)
    yield opened
    await opened.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi()
    await api.start()
    yield api
    await api.close()


@pytest.fixture
def config(fake: FakeApi) -> ProviderConfig:
    return ProviderConfig(api_key=SECRET, secret_key=KLING_SECRET, base_url=fake.url)


@dataclass
class Sleeps:
    """Stands in for asyncio.sleep in adapters: records each wait, waits for nothing, and moves
    the clock the adapters read, so backoffs, Retry-After and cooldowns are tested without
    time passing."""

    now: float = 1000.0
    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


async def input_file(backends: Backends, data: bytes, content_type: str = "image/png") -> BlobRef:
    """An uploaded input file of the test's tenant, as CreateJob resolves it."""
    key = f"tenants/{OWNER}/uploads/{uuid.uuid4().hex}.png"
    return await backends.blobs.put(key, data, content_type)


async def attempt(
    backends: Backends, model: str, job_input: JobInput
) -> tuple[Job, AttemptContext]:
    """A new job of `model`, claimed: its first attempt's context, as the worker makes it."""
    new = NewJob(uuid.uuid4().hex, OWNER, model, job_input, datetime.now(UTC))
    job, _ = await backends.jobs.create(new)
    claimed = await backends.jobs.claim(job.id)
    assert isinstance(claimed, Claimed)
    ctx = AttemptContext(claimed.job, backends.jobs, backends.events, backends.blobs)
    return claimed.job, ctx


async def run(
    backends: Backends, provider: Provider, model: str, job_input: JobInput
) -> tuple[Job, AttemptContext]:
    """Runs one attempt of a new job to its end; the job as stored after, and the context."""
    job, ctx = await attempt(backends, model, job_input)
    await provider.run(ctx)
    stored = await backends.jobs.get(job.id)
    assert stored is not None
    return stored, ctx


async def blob(backends: Backends, ref: BlobRef | None) -> bytes:
    assert ref is not None
    return await backends.blobs.get(ref.key)
