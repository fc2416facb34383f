"""The local blob store's own HTTP server: what it answers beyond the BlobStore contract."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from core.adapters.blob_keys import load_or_create_secret
from core.adapters.local_blobs import LocalBlobStore

WAIT_SECONDS = 5.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalBlobStore]:
    store = LocalBlobStore(tmp_path / "blobs", "", secret=b"s" * 32)
    await store.start_server("127.0.0.1", 0)
    yield store
    await store.close()


async def raw_request(store: LocalBlobStore, request: bytes) -> bytes:
    """Sends `request` as is and returns the whole response."""
    host, port = store.base_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), WAIT_SECONDS)
    finally:
        writer.close()
        await writer.wait_closed()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def signed_target(store: LocalBlobStore, key: str) -> str:
    url = await store.download_url(key, timedelta(minutes=1))
    return url.removeprefix(store.base_url)


async def test_methods_other_than_get_and_head_are_not_allowed(store: LocalBlobStore) -> None:
    await store.put("a.txt", b"a", "text/plain")
    target = await signed_target(store, "a.txt")

    response = await raw_request(store, f"DELETE {target} HTTP/1.1\r\n\r\n".encode())

    assert status_of(response) == 405
    assert b"Allow: GET, HEAD" in response
    assert await store.get("a.txt") == b"a"


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /blobs/a.txt HTTP/1.1",
        b"GET /blobs/a.txt?expires=soon&signature=00 HTTP/1.1",
        b"GET /blobs/a.txt?expires=1&expires=2&signature=00 HTTP/1.1",
        b"GET /blobs/..%2Fsecret?expires=1&signature=00 HTTP/1.1",
        b"GARBAGE",
    ],
)
async def test_malformed_requests_are_bad_requests(
    store: LocalBlobStore, request_line: bytes
) -> None:
    response = await raw_request(store, request_line + b"\r\n\r\n")

    assert status_of(response) == 400


async def test_a_path_outside_blobs_is_not_found(store: LocalBlobStore) -> None:
    response = await raw_request(store, b"GET /etc/passwd HTTP/1.1\r\n\r\n")

    assert status_of(response) == 404


async def test_a_request_head_too_large_is_refused(store: LocalBlobStore) -> None:
    huge = b"GET /blobs/a.txt HTTP/1.1\r\nX-Pad: " + b"p" * 20_000 + b"\r\n\r\n"

    response = await raw_request(store, huge)

    assert status_of(response) == 400


async def test_keys_with_url_special_characters_download(store: LocalBlobStore) -> None:
    await store.put("jobs/j-1/out_v1.0.txt", b"ok", "text/plain")
    target = await signed_target(store, "jobs/j-1/out_v1.0.txt")

    response = await raw_request(store, f"GET {target} HTTP/1.1\r\n\r\n".encode())

    assert status_of(response) == 200
    assert response.endswith(b"\r\n\r\nok")


async def test_closing_the_store_stops_its_server(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, "", secret=b"s" * 32)
    await store.start_server("127.0.0.1", 0)
    host, port = store.base_url.removeprefix("http://").rsplit(":", 1)
    idle_reader, idle_writer = await asyncio.open_connection(host, int(port))

    await asyncio.wait_for(store.close(), WAIT_SECONDS)

    assert await asyncio.wait_for(idle_reader.read(), WAIT_SECONDS) == b""
    idle_writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection(host, int(port))


async def test_a_store_given_a_base_url_keeps_it(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, "https://files.example.com/", secret=b"s" * 32)

    url = await store.download_url("a.txt", timedelta(minutes=1))

    assert url.startswith("https://files.example.com/blobs/a.txt?expires=")


def test_the_signing_secret_is_created_private_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "blob-secret"

    first = load_or_create_secret(path)

    assert load_or_create_secret(path) == first
    assert len(first) >= 32
    assert path.stat().st_mode & 0o777 == 0o600


def test_processes_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "data" / "blob-secret"
    start = time.time() + 1.5  # every process is up by then, and they all go at once
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        secrets = pool.starmap(_load_secret_at, [(path, start)] * 8)

    assert len(set(secrets)) == 1
    assert [p.name for p in path.parent.iterdir()] == ["blob-secret"]


def _load_secret_at(path: Path, start: float) -> bytes:
    while time.time() < start:
        pass
    return load_or_create_secret(path)


def test_an_unusable_secret_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "blob-secret"
    path.write_text("short")

    with pytest.raises(ValueError, match="blob-secret"):
        load_or_create_secret(path)


async def test_head_on_a_download_url_gives_the_headers_only(store: LocalBlobStore) -> None:
    await store.put("jobs/j1/a.txt", b"hello", "text/plain")
    target = await signed_target(store, "jobs/j1/a.txt")

    response = await raw_request(store, f"HEAD {target} HTTP/1.1\r\n\r\n".encode())

    assert status_of(response) == 200
    assert b"Content-Length: 5\r\n" in response
    assert response.endswith(b"\r\n\r\n")


async def test_a_download_names_the_blobs_sha256_as_its_etag(store: LocalBlobStore) -> None:
    ref = await store.put("jobs/j1/a.txt", b"hello", "text/plain")
    target = await signed_target(store, "jobs/j1/a.txt")

    response = await raw_request(store, f"GET {target} HTTP/1.1\r\n\r\n".encode())

    assert f'ETag: "{ref.sha256}"'.encode() in response


async def upload_target(store: LocalBlobStore, key: str, size: int) -> str:
    upload = await store.upload_url(key, "text/plain", size, timedelta(minutes=1))
    return upload.url.removeprefix(store.base_url)


async def test_an_upload_without_content_length_is_refused(store: LocalBlobStore) -> None:
    target = await upload_target(store, "up/a.txt", 5)

    request = f"PUT {target} HTTP/1.1\r\nContent-Type: text/plain\r\n\r\nhello"
    response = await raw_request(store, request.encode())

    assert status_of(response) == 411
    assert await store.stat("up/a.txt") is None


async def test_a_chunked_upload_is_refused(store: LocalBlobStore) -> None:
    target = await upload_target(store, "up/a.txt", 5)

    request = (
        f"PUT {target} HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    response = await raw_request(store, request.encode())

    assert status_of(response) == 400
    assert await store.stat("up/a.txt") is None


async def test_an_upload_that_expects_100_continue_gets_it(store: LocalBlobStore) -> None:
    target = await upload_target(store, "up/a.txt", 5)

    request = (
        f"PUT {target} HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        "Expect: 100-continue\r\n\r\nhello"
    )
    response = await raw_request(store, request.encode())

    assert response.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert await store.get("up/a.txt") == b"hello"


async def test_a_cut_off_upload_stores_nothing(store: LocalBlobStore, tmp_path: Path) -> None:
    target = await upload_target(store, "up/a.txt", 5)

    request = f"PUT {target} HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhel"
    host, port = store.base_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request.encode())
    writer.write_eof()
    # The server answers nothing and hangs up once it has thrown the partial upload away.
    assert await asyncio.wait_for(reader.read(), WAIT_SECONDS) == b""
    writer.close()
    await writer.wait_closed()

    assert await store.stat("up/a.txt") is None
    assert not list((tmp_path / "blobs").rglob(".upload-*"))
