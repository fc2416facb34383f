"""The BlobStore's upload URLs: one plain HTTP request stores a blob of exactly the size and type
that were signed, before the URL expires, and never over a blob that exists."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from core.jobs import BlobRef
from core.ports import BlobStore, UploadTarget

DATA = b"a file the caller uploads\n" * 40
KEY = "tenants/t1/uploads/u1/notes.txt"
TYPE = "text/plain"
# Expiry is checked in whole seconds: a one-second URL is surely dead after this long.
URL_EXPIRY_WAIT_SECONDS = 2.1


def _send(url: str, method: str, data: bytes | None, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return error.code


async def send(target: UploadTarget, data: bytes, **header_changes: str) -> int:
    """PUTs `data` as `target` says, with some headers changed (Content_Type=... style)."""
    headers = dict(target.headers)
    headers.update({name.replace("_", "-"): value for name, value in header_changes.items()})
    return await asyncio.to_thread(_send, target.url, target.method, data, headers)


async def upload_target(
    store: BlobStore, size: int = len(DATA), ttl: timedelta = timedelta(minutes=5)
) -> UploadTarget:
    return await store.upload_url(KEY, TYPE, size, ttl)


async def test_an_upload_url_stores_the_blob_with_its_type_size_and_sha256(
    blob_store: BlobStore,
) -> None:
    before = datetime.now(UTC)
    target = await upload_target(blob_store)

    assert target.method == "PUT"
    assert target.headers["Content-Type"] == TYPE
    assert target.headers["Content-Length"] == str(len(DATA))
    assert before + timedelta(minutes=4) < target.expires <= before + timedelta(minutes=6)
    assert await send(target, DATA) == 200
    expected = BlobRef(KEY, TYPE, len(DATA), hashlib.sha256(DATA).hexdigest())
    assert await blob_store.stat(KEY) == expected
    assert await blob_store.get(KEY) == DATA


async def test_an_upload_of_another_size_is_refused(blob_store: BlobStore) -> None:
    target = await upload_target(blob_store)

    status = await send(target, DATA + b"more", Content_Length=str(len(DATA) + 4))

    assert status in (400, 403)
    assert await blob_store.stat(KEY) is None


async def test_an_upload_of_another_type_is_refused(blob_store: BlobStore) -> None:
    target = await upload_target(blob_store)

    assert await send(target, DATA, Content_Type="text/html") in (400, 403)
    assert await blob_store.stat(KEY) is None


async def test_an_expired_upload_url_is_refused(blob_store: BlobStore) -> None:
    target = await upload_target(blob_store, ttl=timedelta(seconds=1))
    await asyncio.sleep(URL_EXPIRY_WAIT_SECONDS)

    assert await send(target, DATA) == 403
    assert await blob_store.stat(KEY) is None


async def test_an_upload_never_replaces_a_blob(blob_store: BlobStore) -> None:
    first = await upload_target(blob_store)
    assert await send(first, DATA) == 200
    second = await upload_target(blob_store)

    assert await send(second, DATA[::-1]) == 412
    assert await send(first, DATA[::-1]) == 412
    assert await blob_store.get(KEY) == DATA


async def test_an_upload_url_does_not_download(blob_store: BlobStore) -> None:
    target = await upload_target(blob_store)
    assert await send(target, DATA) == 200

    status = await asyncio.to_thread(_send, target.url, "GET", None, {})

    assert status == 403


async def test_an_empty_upload_is_a_blob(blob_store: BlobStore) -> None:
    target = await upload_target(blob_store, size=0)

    assert await send(target, b"") == 200
    stat = await blob_store.stat(KEY)
    assert stat is not None
    assert (stat.size_bytes, stat.sha256) == (0, hashlib.sha256(b"").hexdigest())


@pytest.mark.parametrize(
    ("key", "content_type", "size"),
    [
        ("../escape.txt", TYPE, 1),
        (KEY, "not a type", 1),
        (KEY, "text/plain\r\nX-Evil: 1", 1),
        (KEY, "", 1),
        (KEY, TYPE, -1),
    ],
)
async def test_bad_upload_requests_are_value_errors(
    blob_store: BlobStore, key: str, content_type: str, size: int
) -> None:
    with pytest.raises(ValueError):
        await blob_store.upload_url(key, content_type, size, timedelta(minutes=1))
