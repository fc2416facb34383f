"""The BlobStore on S3, or anything that speaks its API (MinIO, moto), through boto3.

boto3 blocks, so every call runs in a worker thread: the event loop never waits on the network.
Blobs live at `<prefix>/<key>` in one bucket. put() sends a SHA-256 checksum S3 verifies and
keeps the hex digest as object metadata, so stat() answers from a HEAD. Download and upload URLs
are presigned (SigV4): the upload's signature covers its Content-Length, Content-Type and
`If-None-Match: *`, so S3 refuses any other size or type, and any overwrite.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from core.adapters.blob_keys import validate_content_type, validate_key
from core.jobs import BlobRef
from core.ports import UploadTarget

log = logging.getLogger(__name__)

SHA256_METADATA = "sha256"
DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 3
# boto3's threads: enough for the default to_thread pool and a busy worker's outputs.
MAX_POOL_CONNECTIONS = 32
HASH_CHUNK_BYTES = 1 << 20
# SigV4 presigned URLs live at least a second and at most a week.
MIN_URL_SECONDS, MAX_URL_SECONDS = 1, 7 * 24 * 3600
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class CannotOpen(Exception):
    """The bucket cannot be used; the message says why and what to do, in one line."""


@dataclass(frozen=True)
class S3Config:
    """Where the blobs go. Credentials left unset come from boto3's usual chain (AWS_* env
    vars, ~/.aws, instance roles)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    create_bucket: bool = True
    # Download and upload URLs are signed for this endpoint when callers reach S3 by another
    # name than this process does (MinIO behind docker compose's network, say).
    public_endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if not _BUCKET_NAME.fullmatch(self.bucket):
            raise ValueError(
                f"bucket name {self.bucket!r} must be 3 to 63 lower-case letters, digits, dots "
                "and hyphens"
            )
        if self.prefix:
            validate_key(self.prefix)


class S3BlobStore:
    """Blobs as objects in one S3 bucket; open it with S3BlobStore.open()."""

    def __init__(self, client: BaseClient, config: S3Config) -> None:
        self._s3 = client
        # Signing a URL makes no request: a second client only knows the public name.
        self._signer = (
            _client(replace(config, endpoint_url=config.public_endpoint_url))
            if config.public_endpoint_url
            else client
        )
        self._config = config
        self.bucket = config.bucket

    @classmethod
    async def open(cls, config: S3Config) -> S3BlobStore:
        """The store, once the bucket is known to be usable (created first if missing and
        allowed). CannotOpen when the endpoint, the credentials or the bucket are not."""
        store = cls(_client(config), config)
        try:
            await asyncio.to_thread(store._ensure_bucket)
        except BaseException:
            await store.close()
            raise
        return store

    async def put(self, key: str, data: bytes, content_type: str) -> BlobRef:
        name = self._object_key(key)
        digest = hashlib.sha256(data)
        ref = BlobRef(key, content_type, len(data), digest.hexdigest())
        await asyncio.to_thread(
            self._s3.put_object,
            Bucket=self.bucket,
            Key=name,
            Body=data,
            ContentType=content_type,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
            Metadata={SHA256_METADATA: ref.sha256},
        )
        return ref

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get, self._object_key(key))

    async def stat(self, key: str) -> BlobRef | None:
        return await asyncio.to_thread(self._stat, key, self._object_key(key))

    async def download_url(self, key: str, ttl: timedelta) -> str:
        params = {"Bucket": self.bucket, "Key": self._object_key(key)}
        return await asyncio.to_thread(
            self._signer.generate_presigned_url,
            "get_object",
            Params=params,
            ExpiresIn=_seconds(ttl),
        )

    async def upload_url(
        self, key: str, content_type: str, size_bytes: int, ttl: timedelta
    ) -> UploadTarget:
        validate_content_type(content_type)
        if size_bytes < 0:
            raise ValueError(f"an upload's size must not be negative, got {size_bytes}")
        seconds = _seconds(ttl)
        # Each of these becomes a signed header: S3 refuses the upload unless it carries them
        # exactly, so the size, the type and "never overwrite" are enforced by S3 itself.
        params = {
            "Bucket": self.bucket,
            "Key": self._object_key(key),
            "ContentType": content_type,
            "ContentLength": size_bytes,
            "IfNoneMatch": "*",
        }
        url = await asyncio.to_thread(
            self._signer.generate_presigned_url, "put_object", Params=params, ExpiresIn=seconds
        )
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(size_bytes),
            "If-None-Match": "*",
        }
        expires = datetime.now(UTC) + timedelta(seconds=seconds)
        return UploadTarget(url=url, method="PUT", headers=headers, expires=expires)

    async def close(self) -> None:
        await asyncio.to_thread(self._s3.close)
        if self._signer is not self._s3:
            await asyncio.to_thread(self._signer.close)

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self._config.prefix}/{key}" if self._config.prefix else key

    def _get(self, name: str) -> bytes:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=name)
        except ClientError as error:
            if _code(error) in _MISSING:
                raise KeyError(name) from None
            raise
        # StreamingBody (not the raw stream its context manager yields) checks the length.
        body = response["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def _stat(self, key: str, name: str) -> BlobRef | None:
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=name)
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise
        content_type = head.get("ContentType", "")
        sha256 = head.get("Metadata", {}).get(SHA256_METADATA)
        if sha256 is None:
            sha256 = self._seal(name, head["ETag"], content_type)
        return BlobRef(key, content_type, head["ContentLength"], sha256)

    def _seal(self, name: str, etag: str, content_type: str) -> str:
        """Hashes an object that came through an upload URL (its uploader declared no digest)
        and records the digest as metadata, so it is computed once per blob."""
        response = self._s3.get_object(Bucket=self.bucket, Key=name, IfMatch=etag)
        digest = hashlib.sha256()
        body = response["Body"]
        try:
            for chunk in body.iter_chunks(HASH_CHUNK_BYTES):
                digest.update(chunk)
        finally:
            body.close()
        sha256 = digest.hexdigest()
        try:
            self._s3.copy_object(
                Bucket=self.bucket,
                Key=name,
                CopySource={"Bucket": self.bucket, "Key": name},
                CopySourceIfMatch=etag,
                MetadataDirective="REPLACE",
                Metadata={SHA256_METADATA: sha256},
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",
            )
        except ClientError as error:
            # The digest is still right for the version read; the next stat() hashes again.
            log.warning("could not record the sha256 of s3 object %s: %s", name, _code(error))
        return sha256

    def _ensure_bucket(self) -> None:
        bucket = self.bucket
        try:
            self._s3.head_bucket(Bucket=bucket)
            return
        except ClientError as error:
            code = _code(error)
            if code in ("403", "AccessDenied", "Forbidden"):
                raise CannotOpen(
                    f"access to bucket {bucket!r} denied: check the S3 credentials "
                    "(JOBGATE_S3_ACCESS_KEY_ID/JOBGATE_S3_SECRET_ACCESS_KEY or AWS_*)"
                ) from None
            if code not in _MISSING:
                raise CannotOpen(f"bucket {bucket!r}: {error}") from None
        except NoCredentialsError:
            raise CannotOpen(
                "no S3 credentials: set JOBGATE_S3_ACCESS_KEY_ID and JOBGATE_S3_SECRET_ACCESS_KEY"
                " (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ) from None
        except BotoCoreError as error:
            where = self._config.endpoint_url or "AWS"
            raise CannotOpen(
                f"cannot reach S3 at {where} ({error}): start it (`docker compose up -d minio`)"
                " or fix JOBGATE_S3_ENDPOINT_URL"
            ) from None
        if not self._config.create_bucket:
            raise CannotOpen(
                f"bucket {bucket!r} does not exist: create it, or set JOBGATE_S3_CREATE_BUCKET=true"
            )
        self._create_bucket()

    def _create_bucket(self) -> None:
        options: dict[str, Any] = {"Bucket": self.bucket}
        region = self._s3.meta.region_name
        if region and region != DEFAULT_REGION:  # the one region that refuses a constraint
            options["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._s3.create_bucket(**options)
        except ClientError as error:
            if _code(error) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise CannotOpen(f"cannot create bucket {self.bucket!r}: {error}") from None
        log.info("created S3 bucket %s", self.bucket)


def _client(config: S3Config) -> BaseClient:
    botocore_config = Config(
        signature_version="s3v4",
        # Path-style URLs work with every S3-compatible server; AWS itself picks its own.
        s3={"addressing_style": "path" if config.endpoint_url else "auto"},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        max_pool_connections=MAX_POOL_CONNECTIONS,
    )
    session = boto3.session.Session(
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        region_name=config.region,
    )
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url,
        # SigV4 signs for a region; MinIO and moto accept S3's historical default.
        region_name=session.region_name or DEFAULT_REGION,
        config=botocore_config,
    )


def _seconds(ttl: timedelta) -> int:
    return min(MAX_URL_SECONDS, max(MIN_URL_SECONDS, math.ceil(ttl.total_seconds())))


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
