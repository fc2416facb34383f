"""CreateUpload: where a caller's input file goes, and the signed request that puts it there.

Every upload gets a key of its own under its owner's prefix,
`tenants/{owner}/uploads/{unique id}/{file name}`, so CreateJob can tell a caller's blobs from
anyone else's by the key alone, and no upload can land on another's key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from jobgate.v1 import job_pb2, job_service_pb2

from core.adapters.blob_keys import validate_content_type
from core.errors import InvalidArgument
from core.ports import BlobStore, UploadTarget
from core.settings import Settings
from server.convert import timestamp

DEFAULT_FILE_NAME = "file"
MAX_FILE_NAME_LENGTH = 100
_SAFE_OWNER = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class UploadPolicy:
    """How large an upload may be, and how long its URL lives."""

    max_bytes: int
    ttl: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadPolicy:
        return cls(settings.upload_max_bytes, timedelta(seconds=settings.upload_url_ttl_seconds))


def tenant_prefix(owner: str) -> str:
    """The key prefix of `owner`'s blobs. Owners that are not key-safe as they are go by a
    digest instead: at 66 characters, longer than any owner name used as it is."""
    if _SAFE_OWNER.fullmatch(owner):
        return f"tenants/{owner}/"
    return f"tenants/h-{hashlib.sha256(owner.encode()).hexdigest()}/"


def upload_key(owner: str, filename: str) -> str:
    upload_id = f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"
    return f"{tenant_prefix(owner)}uploads/{upload_id}/{safe_file_name(filename)}"


def safe_file_name(filename: str) -> str:
    """The last part of `filename` in letters, digits, `.`, `_` and `-`; `file` if none is left."""
    base = re.split(r"[/\\]", filename)[-1]
    name = _UNSAFE_RUN.sub("_", base)
    name = re.sub(r"\.{2,}", ".", name).lstrip(".")[:MAX_FILE_NAME_LENGTH]
    return name.strip("_") or DEFAULT_FILE_NAME


class Uploads:
    """Answers CreateUpload from the blob store."""

    def __init__(self, blobs: BlobStore, policy: UploadPolicy) -> None:
        self._blobs = blobs
        self._policy = policy

    async def create(
        self, owner: str, request: job_service_pb2.CreateUploadRequest
    ) -> job_service_pb2.CreateUploadResponse:
        content_type = self._content_type(request.content_type)
        size = self._size(request.size_bytes)
        key = upload_key(owner, request.filename)
        target = await self._blobs.upload_url(key, content_type, size, self._policy.ttl)
        return _response(
            job_pb2.BlobRef(key=key, content_type=content_type, size_bytes=size), target
        )

    def _content_type(self, content_type: str) -> str:
        if not content_type:
            raise InvalidArgument("content_type", "content_type is required, e.g. image/png")
        try:
            return validate_content_type(content_type)
        except ValueError as error:
            raise InvalidArgument("content_type", str(error)) from None

    def _size(self, size: int) -> int:
        if size < 0:
            raise InvalidArgument("size_bytes", f"size_bytes must not be negative, got {size}")
        if size > self._policy.max_bytes:
            raise InvalidArgument(
                "size_bytes",
                f"size_bytes {size} is above the upload limit of {self._policy.max_bytes} bytes",
            )
        return size


def _response(blob: job_pb2.BlobRef, target: UploadTarget) -> job_service_pb2.CreateUploadResponse:
    return job_service_pb2.CreateUploadResponse(
        blob=blob,
        upload_uri=target.url,
        upload_method=target.method,
        upload_headers=dict(target.headers),
        expire_time=timestamp(target.expires),
    )
