"""What both clients need to upload an input file: the CreateUpload request, then one plain
HTTP request that sends the bytes to the URL it returned (urllib, no extra dependency)."""

from __future__ import annotations

import mimetypes
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc

from jobgate.client._errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    JobgateError,
    PermissionDeniedError,
    UnavailableError,
)
from jobgate.v1 import job_pb2, job_service_pb2

DEFAULT_CONTENT_TYPE = "application/octet-stream"
UPLOAD_TIMEOUT_SECONDS = 300.0
_ERROR_BODY_BYTES = 500


@dataclass(frozen=True)
class UploadFile:
    """The bytes to upload, with the name and media type they go by."""

    data: bytes
    filename: str
    content_type: str


def upload_file(
    source: str | os.PathLike[str] | bytes, content_type: str | None, filename: str | None
) -> UploadFile:
    """Reads `source` (a path, or the bytes themselves); the type is guessed from the file name
    when not given. Blocking."""
    if isinstance(source, bytes | bytearray):
        data, name = bytes(source), filename or ""
    else:
        path = Path(source)
        data, name = path.read_bytes(), filename or path.name
    guessed = mimetypes.guess_type(name)[0] if name else None
    return UploadFile(data, name, content_type or guessed or DEFAULT_CONTENT_TYPE)


def create_upload(file: UploadFile) -> job_service_pb2.CreateUploadRequest:
    return job_service_pb2.CreateUploadRequest(
        content_type=file.content_type, size_bytes=len(file.data), filename=file.filename
    )


def send(file: UploadFile, upload: job_service_pb2.CreateUploadResponse) -> job_pb2.BlobRef:
    """PUTs the bytes where CreateUpload said; the blob to name in `files=`. Blocking."""
    request = urllib.request.Request(
        upload.upload_uri,
        data=file.data,
        method=upload.upload_method,
        headers=dict(upload.upload_headers),
    )
    try:
        with urllib.request.urlopen(request, timeout=UPLOAD_TIMEOUT_SECONDS) as response:
            response.read()
    except urllib.error.HTTPError as error:
        with error:
            body = error.read(_ERROR_BODY_BYTES).decode("utf-8", "replace")
        raise _http_error(error.code, body) from None
    except OSError as error:  # the URL's host refused, timed out or is unknown
        raise UnavailableError(
            grpc.StatusCode.UNAVAILABLE, f"could not send the upload: {error}"
        ) from None
    return upload.blob


def _http_error(status: int, body: str) -> JobgateError:
    # The message leaves the URL out: until it expires it grants the upload to whoever has it.
    message = f"the upload was refused with HTTP {status}: {body.strip()}"
    if status in (400, 411):
        return InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, message)
    if status == 403:
        return PermissionDeniedError(grpc.StatusCode.PERMISSION_DENIED, message)
    if status == 412:
        return AlreadyExistsError(grpc.StatusCode.ALREADY_EXISTS, message)
    if status >= 500:
        return UnavailableError(grpc.StatusCode.UNAVAILABLE, message)
    return JobgateError(grpc.StatusCode.UNKNOWN, message)
