"""A minimal HTTP/1.1 server for the local blob store's signed URLs.

GET or HEAD /blobs/<key>?expires=<unix>&signature=<hex> downloads a blob; PUT
/blobs/<key>?expires=<unix>&size=<bytes>&type=<media type>&signature=<hex> uploads one, with
exactly that Content-Length and Content-Type, to a key that holds no blob yet. One request per
connection; no new dependency, just asyncio streams. The signature is checked before the blob is
looked up, so an unsigned caller cannot even learn whether a key exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from core.adapters.blob_keys import signature_valid, upload_signature_valid, validate_key
from core.jobs import BlobRef

if TYPE_CHECKING:
    from core.adapters.local_blobs import LocalBlobStore, PendingUpload

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
READ_TIMEOUT_SECONDS = 10.0
CHUNK_BYTES = 1 << 20
PATH_PREFIX = "/blobs/"
_UNSPECIFIED_HOSTS = {"", "0.0.0.0", "::"}
ALLOWED_METHODS = ("GET", "HEAD", "PUT")


@dataclass(frozen=True)
class _Request:
    method: str
    key: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case

    def one(self, name: str, *, number: bool = False) -> str:
        """The query parameter `name`, given exactly once (and all digits, with `number`)."""
        values = self.query.get(name, [])
        if len(values) != 1 or (number and not values[0].isdigit()):
            raise _Refusal(HTTPStatus.BAD_REQUEST, f"query parameter {name} is required, once")
        return values[0]


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
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            log.debug("blob connection dropped or timed out")
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
            request = _parse_head(head)
            if request.method == "PUT":
                await self._receive(request, reader, writer)
                return
            key, head_only = self._authorize_download(request)
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
        log.debug("%s blob %s (%d bytes)", request.method, key, found.ref.size_bytes)

    def _authorize_download(self, request: _Request) -> tuple[str, bool]:
        """(key, head only) of a download with a valid signature."""
        expires = int(request.one("expires", number=True))
        signature = request.one("signature")
        if not signature_valid(self._store.secret, request.key, expires, signature, time.time()):
            raise _Refusal(HTTPStatus.FORBIDDEN, "bad or expired signature")
        return request.key, request.method == "HEAD"

    def _authorize_upload(self, request: _Request) -> tuple[int, str]:
        """(size, content type) of an upload whose signature and headers match."""
        expires = int(request.one("expires", number=True))
        size = int(request.one("size", number=True))
        content_type = request.one("type")
        signature = request.one("signature")
        valid = upload_signature_valid(
            self._store.secret, request.key, expires, size, content_type, signature, time.time()
        )
        if not valid:
            raise _Refusal(HTTPStatus.FORBIDDEN, "bad or expired signature")
        if "transfer-encoding" in request.headers:
            raise _Refusal(HTTPStatus.BAD_REQUEST, "send the body with Content-Length, not chunked")
        length = request.headers.get("content-length")
        if length is None:
            raise _Refusal(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if length != str(size):
            raise _Refusal(HTTPStatus.FORBIDDEN, f"Content-Length must be {size}, as signed")
        if request.headers.get("content-type") != content_type:
            raise _Refusal(HTTPStatus.FORBIDDEN, f"Content-Type must be {content_type}, as signed")
        return size, content_type

    async def _receive(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        size, content_type = self._authorize_upload(request)
        try:
            pending = await asyncio.to_thread(self._store.begin_upload, request.key)
        except FileExistsError:
            raise _Refusal(HTTPStatus.PRECONDITION_FAILED, "a blob exists at this key") from None
        try:
            if request.headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
            await _read_body(reader, pending, size)
            ref = await asyncio.to_thread(pending.commit, content_type)
        except BaseException:
            await asyncio.to_thread(pending.discard)
            raise
        if ref is None:
            raise _Refusal(HTTPStatus.PRECONDITION_FAILED, "a blob exists at this key")
        _write_head(writer, HTTPStatus.OK, [("ETag", f'"{ref.sha256}"'), ("Content-Length", "0")])
        await writer.drain()
        log.debug("PUT blob %s (%d bytes)", ref.key, ref.size_bytes)


def _parse_head(head: bytes) -> _Request:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _Refusal(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, _ = parts
    if method not in ALLOWED_METHODS:
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
    return _Request(method, key, query, _parse_headers(lines[1:]))


def _parse_headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in filter(None, lines):
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            raise _Refusal(HTTPStatus.BAD_REQUEST, "malformed header line")
        if name in headers:
            # Two lengths or types could make the body mean two things: refuse, never guess.
            raise _Refusal(HTTPStatus.BAD_REQUEST, f"header {name} given twice")
        headers[name] = value.strip()
    return headers


async def _read_body(reader: asyncio.StreamReader, pending: PendingUpload, size: int) -> None:
    remaining = size
    while remaining:
        chunk = await asyncio.wait_for(
            reader.readexactly(min(CHUNK_BYTES, remaining)), READ_TIMEOUT_SECONDS
        )
        await asyncio.to_thread(pending.write, chunk)
        remaining -= len(chunk)


async def _send_error(writer: asyncio.StreamWriter, status: HTTPStatus, message: str) -> None:
    body = f"{status.value} {status.phrase}: {message}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
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
