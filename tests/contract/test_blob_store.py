"""The BlobStore contract: bytes by key, metadata, and signed download URLs over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import pytest

from core.jobs import BlobRef
from core.ports import BlobStore

# Expiry is checked in whole seconds: a one-second URL is surely dead after this long.
URL_EXPIRY_WAIT_SECONDS = 2.1
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

INVALID_KEYS = [
    "",
    "/absolute/path.png",
    "../outside.png",
    "jobs/../../etc/passwd",
    "jobs/x/..",
    "jobs//double-slash",
    "jobs/x/",
    "./here",
    "spaces are not allowed",
    "jobs/ümlaut.png",
    "query?x=1",
    "back\\slash",
    "x" * 513,
]


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # names match in any case, as in HTTP
    body: bytes


def _fetch(url: str, method: str) -> Response:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, error.headers, error.read())


async def fetch(url: str, method: str = "GET") -> Response:
    return await asyncio.to_thread(_fetch, url, method)


async def test_put_then_get_and_stat(blob_store: BlobStore) -> None:
    ref = await blob_store.put("jobs/j1/image.png", PNG, "image/png")

    expected = BlobRef("jobs/j1/image.png", "image/png", len(PNG), hashlib.sha256(PNG).hexdigest())
    assert ref == expected
    assert await blob_store.get("jobs/j1/image.png") == PNG
    assert await blob_store.stat("jobs/j1/image.png") == expected


async def test_put_replaces_a_blob_whole(blob_store: BlobStore) -> None:
    await blob_store.put("jobs/j1/out.txt", b"first version", "text/plain")

    ref = await blob_store.put("jobs/j1/out.txt", b"second", "text/markdown")

    assert await blob_store.get("jobs/j1/out.txt") == b"second"
    assert await blob_store.stat("jobs/j1/out.txt") == ref
    assert (ref.size_bytes, ref.content_type) == (6, "text/markdown")


async def test_keys_that_nest_are_separate_blobs(blob_store: BlobStore) -> None:
    await blob_store.put("jobs/a", b"outer", "text/plain")
    await blob_store.put("jobs/a/b", b"inner", "text/plain")

    assert await blob_store.get("jobs/a") == b"outer"
    assert await blob_store.get("jobs/a/b") == b"inner"


async def test_an_empty_blob_is_a_blob(blob_store: BlobStore) -> None:
    ref = await blob_store.put("empty", b"", "application/octet-stream")

    assert await blob_store.get("empty") == b""
    assert ref.size_bytes == 0


async def test_a_missing_blob_is_a_key_error_and_has_no_stat(blob_store: BlobStore) -> None:
    with pytest.raises(KeyError):
        await blob_store.get("jobs/none/missing.png")
    assert await blob_store.stat("jobs/none/missing.png") is None


@pytest.mark.parametrize("key", INVALID_KEYS)
async def test_unsafe_keys_are_refused(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        await blob_store.put(key, b"x", "text/plain")
    with pytest.raises(ValueError):
        await blob_store.get(key)
    with pytest.raises(ValueError):
        await blob_store.stat(key)
    with pytest.raises(ValueError):
        await blob_store.download_url(key, timedelta(minutes=1))


async def test_a_download_url_fetches_the_blob_without_credentials(blob_store: BlobStore) -> None:
    await blob_store.put("jobs/j1/image-1.png", PNG, "image/png")

    url = await blob_store.download_url("jobs/j1/image-1.png", timedelta(minutes=5))
    response = await fetch(url)

    assert response.status == 200
    assert response.body == PNG
    assert response.headers["Content-Type"] == "image/png"
    assert int(response.headers["Content-Length"]) == len(PNG)


async def test_an_expired_download_url_is_forbidden(blob_store: BlobStore) -> None:
    await blob_store.put("jobs/j1/image.png", PNG, "image/png")

    url = await blob_store.download_url("jobs/j1/image.png", timedelta(seconds=1))
    await asyncio.sleep(URL_EXPIRY_WAIT_SECONDS)

    assert (await fetch(url)).status == 403


async def test_a_tampered_download_url_is_forbidden(blob_store: BlobStore) -> None:
    await blob_store.put("jobs/j1/image.png", PNG, "image/png")
    await blob_store.put("jobs/j2/image.png", b"someone else's", "image/png")
    url = await blob_store.download_url("jobs/j1/image.png", timedelta(minutes=5))
    flipped = "0" if url[-1] != "0" else "1"

    assert (await fetch(url[:-1] + flipped)).status == 403
    assert (await fetch(url.replace("jobs/j1/", "jobs/j2/"))).status == 403


async def test_a_download_url_of_a_missing_blob_is_not_found(blob_store: BlobStore) -> None:
    url = await blob_store.download_url("jobs/j1/never-written.png", timedelta(minutes=5))

    assert (await fetch(url)).status == 404
