"""A minimal HTTP/1.1 server for the local blob store's signed download URLs.

GET or HEAD /blobs/<key>?expires=<unix>&signature=<hex>. One request per connection; no new
dependency, just asyncio streams. The signature is checked before the blob is looked up, so an
unsigned caller cannot even learn whether a key exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from core.adapters.blob_keys import signature_valid, validate_key
from core.jobs import BlobRef

if TYPE_CHECKING:
    from core.adapters.local_blobs import LocalBlobStore

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
READ_TIMEOUT_SECONDS = 10.0
CHUNK_BYTES = 1 << 20
PATH_PREFIX = "/blobs/"
_UNSPECIFIED_HOSTS = {"", "0.0.0.0", "::"}


class _Refusal(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BlobHttpServer:
    """Serves one LocalBlobStore's blobs to holders of a valid, unexpired signed URL."""

    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD_BYTES)
        bound_host, self.port = self._server.sockets[0].getsockname()[:2]
        self.host = "127.0.0.1" if host in _UNSPECIFIED_HOSTS else bound_host
        log.info("serving blob downloads on %s", self.base_url)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._respond(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            log.debug("blob download connection dropped")
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
        except (asyncio.LimitOverrunError, ValueError):
            await _send_error(writer, HTTPStatus.BAD_REQUEST, "request head too large")
            return
        except TimeoutError:
            return
        try:
            method, key, head_only = self._authorize(head)
            found = await asyncio.to_thread(self._store.locate, key)
            if found is None:
                raise _Refusal(HTTPStatus.NOT_FOUND, "no such blob")
        except _Refusal as refusal:
            await _send_error(writer, refusal.status, refusal.message)
            return
        try:
            first = b"" if head_only else await asyncio.to_thread(_read_chunk, found.path, 0)
        except FileNotFoundError:
            await _send_error(writer, HTTPStatus.NOT_FOUND, "no such blob")
            return
        await _send_blob(writer, found.ref, found.path, first, head_only=head_only)
        log.debug("%s blob %s (%d bytes)", method, key, found.ref.size_bytes)

    def _authorize(self, head: bytes) -> tuple[str, str, bool]:
        """(method, key, head only) of a well-formed request with a valid signature."""
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _Refusal(HTTPStatus.BAD_REQUEST, "malformed request line")
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            raise _Refusal(HTTPStatus.METHOD_NOT_ALLOWED, f"method {method} not allowed")
        url = urlsplit(target)
        if not url.path.startswith(PATH_PREFIX):
            raise _Refusal(HTTPStatus.NOT_FOUND, "not a blob path")
        key = unquote(url.path[len(PATH_PREFIX) :])
        try:
            validate_key(key)
        except ValueError as exc:
            raise _Refusal(HTTPStatus.BAD_REQUEST, str(exc)) from None
        query = parse_qs(url.query, keep_blank_values=True)
        expires_values = query.get("expires", [])
        signatures = query.get("signature", [])
        if len(expires_values) != 1 or len(signatures) != 1 or not expires_values[0].isdigit():
            raise _Refusal(HTTPStatus.BAD_REQUEST, "expires and signature are required, once")
        expires = int(expires_values[0])
        if not signature_valid(self._store.secret, key, expires, signatures[0], time.time()):
            raise _Refusal(HTTPStatus.FORBIDDEN, "bad or expired signature")
        return method, key, method == "HEAD"


async def _send_error(writer: asyncio.StreamWriter, status: HTTPStatus, message: str) -> None:
    body = f"{status.value} {status.phrase}: {message}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        headers.append(("Allow", "GET, HEAD"))
    _write_head(writer, status, headers)
    writer.write(body)
    await writer.drain()


def _write_head(
    writer: asyncio.StreamWriter, status: HTTPStatus, headers: Iterable[tuple[str, str]]
) -> None:
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
    lines += [f"{name}: {value}" for name, value in (*headers, ("Connection", "close"))]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


async def _send_blob(
    writer: asyncio.StreamWriter, ref: BlobRef, path: Path, first: bytes, *, head_only: bool
) -> None:
    """The 200 head, then (unless HEAD) the file's bytes, starting with its `first` chunk."""
    headers = [
        ("Content-Type", ref.content_type or "application/octet-stream"),
        ("Content-Length", str(ref.size_bytes)),
        ("ETag", f'"{ref.sha256}"'),
    ]
    _write_head(writer, HTTPStatus.OK, headers)
    await writer.drain()
    if head_only:
        return
    chunk, sent = first, 0
    while chunk:
        writer.write(chunk)
        await writer.drain()
        sent += len(chunk)
        chunk = await asyncio.to_thread(_read_chunk, path, sent)


def _read_chunk(path: Path, offset: int) -> bytes:
    # Opened and closed within the worker thread: a cancelled download leaks no file handle.
    with path.open("rb") as file:
        file.seek(offset)
        return file.read(CHUNK_BYTES)
