"""The BlobStore in a local folder, and a small HTTP server for its signed download URLs.

Files live under `root/<h[:2]>/<h>` where h is the sha256 of the key: no key can name a path
outside the folder, and keys like `a` and `a/b` never collide as file and directory. Each blob
has a sidecar `<h>.json` with its key, content type, size and sha256, so stat() needs no hashing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from core.adapters.blob_http import BlobHttpServer
from core.adapters.blob_keys import sign, validate_key
from core.jobs import BlobRef

__all__ = ["BlobFile", "BlobHttpServer", "LocalBlobStore"]


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


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
