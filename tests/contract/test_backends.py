"""open_backends: the embedded backends from Settings, and clear errors for bad settings."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.backends import open_backends
from core.catalog import Catalog
from core.errors import ConfigError
from core.jobs import JobInput, NewJob
from core.settings import Settings

CATALOG = Catalog([])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", blob_http_listen="127.0.0.1:0")


async def test_the_embedded_backends_open_under_the_data_dir(settings: Settings) -> None:
    backends = await open_backends(settings, CATALOG, serves_api=True)
    try:
        await backends.blobs.put("hello.txt", b"hi", "text/plain")
        url = await backends.blobs.download_url("hello.txt", timedelta(minutes=1))
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        key = await backends.accounts.create_key("dev")
    finally:
        await backends.close()

    assert body == b"hi"
    assert ":0/" not in url
    assert {p.name for p in settings.data_dir.iterdir()} >= {
        "jobs.db",
        "accounts.db",
        "blobs",
        "blob-secret",
    }
    assert backends.catalog is CATALOG
    reopened = await open_backends(settings, CATALOG, serves_api=False)
    try:
        assert await reopened.accounts.authenticate(key) is not None
        assert await reopened.blobs.get("hello.txt") == b"hi"
    finally:
        await reopened.close()


async def test_backends_keep_their_state_across_a_restart(settings: Settings) -> None:
    backends = await open_backends(settings, CATALOG, serves_api=False)
    job = NewJob("j1", "dev", "local/echo", JobInput(prompt="x"), datetime.now(UTC))
    await backends.jobs.create(job)
    await backends.close()

    backends = await open_backends(settings, CATALOG, serves_api=False)
    try:
        found = await backends.jobs.get("j1")
    finally:
        await backends.close()

    assert found is not None


async def test_store_paths_get_their_parent_folders(tmp_path: Path, settings: Settings) -> None:
    deep = tmp_path / "a" / "b"
    settings = replace(
        settings,
        job_store_url=f"sqlite:///{deep / 'jobs.db'}",
        blob_store_url=f"file://{deep / 'blobs'}",
    )

    backends = await open_backends(settings, CATALOG, serves_api=False)
    await backends.close()

    assert (deep / "jobs.db").exists()
    assert (deep / "blobs").is_dir()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"job_store_url": "foo://x"},
            "JOBGATE_JOB_STORE_URL='foo://x': unsupported scheme 'foo' (expected sqlite:///path",
        ),
        ({"account_store_url": "mysql://db"}, "JOBGATE_ACCOUNT_STORE_URL='mysql://db'"),
        ({"broker_url": "kafka://broker"}, "unsupported scheme 'kafka' (expected memory://"),
        ({"blob_store_url": "ftp://bucket"}, "JOBGATE_BLOB_STORE_URL='ftp://bucket'"),
        ({"job_store_url": "sqlite://relative/jobs.db"}, "expected an absolute path"),
        ({"job_store_url": "sqlite:///"}, "expected an absolute path"),
        ({"blob_store_url": "file:blobs"}, "expected an absolute path"),
        ({"job_store_url": "http://[::1"}, "malformed URL"),
        ({"blob_http_listen": "no-port"}, "JOBGATE_BLOB_HTTP_LISTEN='no-port': expected host:port"),
        ({"job_store_url": "sqlite:///dev/null/jobs.db"}, "JOBGATE_JOB_STORE_URL="),
    ],
)
async def test_bad_settings_fail_with_one_clear_line(
    settings: Settings, changes: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        await open_backends(replace(settings, **changes), CATALOG, serves_api=True)

    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


async def test_a_failure_closes_the_backends_already_open(settings: Settings) -> None:
    taken = await open_backends(settings, CATALOG, serves_api=True)
    url = await taken.blobs.download_url("x", timedelta(minutes=1))
    busy_port = url.split("/")[2]
    before = set(threading.enumerate())
    try:
        with pytest.raises(ConfigError, match="cannot listen"):
            await open_backends(
                replace(settings, blob_http_listen=busy_port), CATALOG, serves_api=True
            )
        # The job and account stores it opened first were closed: their threads are gone.
        assert await _threads_started_since(before) == set()
    finally:
        await taken.close()


async def _threads_started_since(before: set[threading.Thread]) -> set[threading.Thread]:
    for _ in range(100):
        started = set(threading.enumerate()) - before
        if not started:
            break
        await asyncio.sleep(0.01)
    return started
