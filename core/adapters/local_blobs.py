"""The BlobStore in a local folder, and a small HTTP server for its signed URLs.

Files live under `root/<h[:2]>/<h>` where h is the sha256 of the key: no key can name a path
outside the folder, and keys like `a` and `a/b` never collide as file and directory. Each blob
has a sidecar `<h>.json` with its key, content type, size and sha256, so stat() needs no hashing.
Signed upload URLs let a caller without credentials PUT one blob of an exact size and type.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode

from core.adapters.blob_http import BlobHttpServer
from core.adapters.blob_keys import sign, sign_upload, validate_content_type, validate_key
from core.jobs import BlobRef
from core.ports import UploadTarget

__all__ = ["BlobFile", "BlobHttpServer", "LocalBlobStore", "PendingUpload"]


@dataclass(frozen=True)
class BlobFile:
    """Where a blob's bytes are, and what its sidecar says about them."""

    path: Path
    ref: BlobRef


class LocalBlobStore:
    """Blobs as files under `root`; download URLs signed with `secret` and served over HTTP.

    `base_url` prefixes download URLs; leave it empty when start_server() will supply it from
    the address it binds.
    """

    def __init__(self, root: Path, base_url: str, secret: bytes) -> None:
        if not secret:
            raise ValueError("the blob store needs a non-empty signing secret")
        self.root = root
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self._server: BlobHttpServer | None = None
        root.mkdir(parents=True, exist_ok=True)

    async def start_server(self, host: str, port: int) -> BlobHttpServer:
        """Serves this store's signed URLs on host:port (0 picks a free port)."""
        if self._server is not None:
            raise RuntimeError("the blob HTTP server is already running")
        server = BlobHttpServer(self)
        await server.start(host, port)
        self._server = server
        if not self.base_url:
            self.base_url = server.base_url
        return server

    async def put(self, key: str, data: bytes, content_type: str) -> BlobRef:
        validate_key(key)
        return await asyncio.to_thread(self._write, key, data, content_type)

    async def get(self, key: str) -> bytes:
        validate_key(key)
        try:
            return await asyncio.to_thread(self._data_path(key).read_bytes)
        except FileNotFoundError:
            raise KeyError(key) from None

    async def stat(self, key: str) -> BlobRef | None:
        validate_key(key)
        found = await asyncio.to_thread(self.locate, key)
        return found.ref if found else None

    async def download_url(self, key: str, ttl: timedelta) -> str:
        validate_key(key)
        if not self.base_url:
            raise RuntimeError("the blob store has no base_url for download URLs")
        expires = int(time.time() + ttl.total_seconds())
        signature = sign(self.secret, key, expires)
        return f"{self.base_url}/blobs/{quote(key)}?expires={expires}&signature={signature}"

    async def upload_url(
        self, key: str, content_type: str, size_bytes: int, ttl: timedelta
    ) -> UploadTarget:
        validate_key(key)
        validate_content_type(content_type)
        if size_bytes < 0:
            raise ValueError(f"an upload's size must not be negative, got {size_bytes}")
        if not self.base_url:
            raise RuntimeError("the blob store has no base_url for upload URLs")
        expires = int(time.time() + ttl.total_seconds())
        signature = sign_upload(self.secret, key, expires, size_bytes, content_type)
        query = urlencode(
            {"expires": expires, "size": size_bytes, "type": content_type, "signature": signature}
        )
        return UploadTarget(
            url=f"{self.base_url}/blobs/{quote(key)}?{query}",
            method="PUT",
            headers={"Content-Type": content_type, "Content-Length": str(size_bytes)},
            expires=datetime.fromtimestamp(expires, UTC),
        )

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

    def locate(self, key: str) -> BlobFile | None:
        """The blob's file and metadata, or None when missing. Blocking: call off the loop."""
        try:
            meta = json.loads(self._meta_path(key).read_text())
        except FileNotFoundError:
            return None
        ref = BlobRef(
            key=key,
            content_type=meta["content_type"],
            size_bytes=meta["size"],
            sha256=meta["sha256"],
        )
        return BlobFile(self._data_path(key), ref)

    def begin_upload(self, key: str) -> PendingUpload:
        """A temporary file to receive `key`'s bytes. FileExistsError when `key` holds a blob
        already: uploads never replace one. Blocking: call off the loop."""
        data_path = self._data_path(key)
        if data_path.exists():
            raise FileExistsError(key)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=data_path.parent, prefix=".upload-")
        return PendingUpload(key, data_path, self._meta_path(key), Path(temp), os.fdopen(fd, "wb"))

    def _write(self, key: str, data: bytes, content_type: str) -> BlobRef:
        ref = BlobRef(
            key=key,
            content_type=content_type,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        meta = {"key": key, "content_type": content_type, "size": ref.size_bytes}
        meta["sha256"] = ref.sha256
        data_path = self._data_path(key)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        # Data first, then the sidecar: a blob stat() can see is a blob get() can read.
        _write_atomically(data_path, data)
        _write_atomically(self._meta_path(key), json.dumps(meta).encode())
        return ref

    def _data_path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / digest[:2] / digest

    def _meta_path(self, key: str) -> Path:
        return self._data_path(key).with_suffix(".json")


class PendingUpload:
    """An upload being received into a temporary file, hashed as its bytes arrive. Blocking
    methods: call them off the loop."""

    def __init__(
        self, key: str, data_path: Path, meta_path: Path, temp: Path, file: BinaryIO
    ) -> None:
        self._key = key
        self._data_path = data_path
        self._meta_path = meta_path
        self._temp = temp
        self._file = file
        self._hash = hashlib.sha256()
        self._size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self._size += len(chunk)

    def commit(self, content_type: str) -> BlobRef | None:
        """Stores the blob; None (and nothing stored) if another blob took the key meanwhile."""
        self._file.close()
        try:
            # A hard link creates the name only if it is free, atomically: two uploads racing
            # for one key cannot both win, and neither replaces a blob put() stored.
            os.link(self._temp, self._data_path)
        except FileExistsError:
            return None
        finally:
            self._temp.unlink(missing_ok=True)
        ref = BlobRef(self._key, content_type, self._size, self._hash.hexdigest())
        meta = {"key": ref.key, "content_type": content_type, "size": ref.size_bytes}
        meta["sha256"] = ref.sha256
        _write_atomically(self._meta_path, json.dumps(meta).encode())
        return ref

    def discard(self) -> None:
        self._file.close()
        self._temp.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
