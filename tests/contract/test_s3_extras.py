"""The S3 blob store beyond the BlobStore contract: what it records in S3, its bucket, and how it
reports a store it cannot use."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.client import BaseClient

from core.adapters.s3_blobs import CannotOpen, S3BlobStore, S3Config
from core.backends import open_backends
from core.catalog import Catalog
from core.errors import ConfigError
from core.settings import Settings
from tests.fixtures.s3 import S3Endpoint, new_bucket_name, remove_bucket

DATA = b"checksummed bytes\n" * 10


@pytest.fixture
async def store(s3_config: S3Config) -> AsyncIterator[S3BlobStore]:
    store = await S3BlobStore.open(s3_config)
    yield store
    await store.close()


def object_key(config: S3Config, key: str) -> str:
    return f"{config.prefix}/{key}"


async def test_put_stores_a_sha256_checksum_the_content_type_and_the_digest(
    store: S3BlobStore, s3_config: S3Config, s3_client: BaseClient
) -> None:
    await store.put("jobs/j1/out.txt", DATA, "text/plain; charset=utf-8")

    head = s3_client.head_object(
        Bucket=s3_config.bucket,
        Key=object_key(s3_config, "jobs/j1/out.txt"),
        ChecksumMode="ENABLED",
    )
    digest = hashlib.sha256(DATA)
    assert head["ChecksumSHA256"] == base64.b64encode(digest.digest()).decode()
    assert head["ContentType"] == "text/plain; charset=utf-8"
    assert head["Metadata"] == {"sha256": digest.hexdigest()}


async def test_an_uploaded_blob_has_its_digest_recorded_by_its_first_stat(
    store: S3BlobStore, s3_config: S3Config, s3_client: BaseClient
) -> None:
    key = "tenants/t1/uploads/u1/file"
    target = await store.upload_url(
        key, "application/octet-stream", len(DATA), timedelta(minutes=1)
    )
    client = s3_client
    client.put_object(
        Bucket=s3_config.bucket,
        Key=object_key(s3_config, key),
        Body=DATA,
        ContentType=target.headers["Content-Type"],
    )

    ref = await store.stat(key)

    assert ref is not None and ref.sha256 == hashlib.sha256(DATA).hexdigest()
    head = client.head_object(Bucket=s3_config.bucket, Key=object_key(s3_config, key))
    assert head["Metadata"] == {"sha256": ref.sha256}
    assert head["ContentType"] == "application/octet-stream"


async def test_an_upload_url_signs_its_length_type_and_refusal_to_overwrite(
    store: S3BlobStore,
) -> None:
    target = await store.upload_url("up/a.png", "image/png", 123, timedelta(minutes=1))

    query = parse_qs(urlsplit(target.url).query)
    signed = set(query["X-Amz-SignedHeaders"][0].split(";"))
    assert {"content-length", "content-type", "if-none-match"} <= signed
    assert target.headers == {
        "Content-Type": "image/png",
        "Content-Length": "123",
        "If-None-Match": "*",
    }
    assert query["X-Amz-Expires"] == ["60"]


async def test_a_missing_bucket_is_created(s3_endpoint: S3Endpoint, s3_client: BaseClient) -> None:
    bucket = new_bucket_name()
    store = await S3BlobStore.open(s3_endpoint.config(bucket))
    try:
        await store.put("a.txt", b"a", "text/plain")
        assert await store.get("a.txt") == b"a"
    finally:
        await store.close()
        remove_bucket(s3_client, bucket)


async def test_a_missing_bucket_is_an_error_when_creating_is_off(s3_endpoint: S3Endpoint) -> None:
    config = s3_endpoint.config(new_bucket_name(), create_bucket=False)

    with pytest.raises(CannotOpen, match=r"does not exist.*JOBGATE_S3_CREATE_BUCKET"):
        await S3BlobStore.open(config)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_settings(tmp_path: Path, **changes: object) -> Settings:
    base = Settings(
        data_dir=tmp_path,
        blob_store_url="s3://jobgate-unused",
        s3_access_key_id="k",
        s3_secret_access_key="s",
    )
    return replace(base, **changes)


async def test_an_unreachable_endpoint_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    settings = s3_settings(tmp_path, s3_endpoint_url=f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(ConfigError) as caught:
        await open_backends(settings, Catalog([]), serves_api=False)

    message = str(caught.value)
    assert message.startswith("JOBGATE_BLOB_STORE_URL='s3://jobgate-unused': cannot reach S3")
    assert "docker compose up -d minio" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"blob_store_url": "s3://"}, "JOBGATE_BLOB_STORE_URL"),
        ({"blob_store_url": "s3://Not_A_Bucket"}, "JOBGATE_BLOB_STORE_URL"),
        ({"blob_store_url": "s3://bucket/../x"}, "JOBGATE_BLOB_STORE_URL"),
        ({"blob_store_url": "s3://user@bucket"}, "JOBGATE_BLOB_STORE_URL"),
        ({"s3_endpoint_url": "minio:9000"}, "JOBGATE_S3_ENDPOINT_URL"),
        ({"s3_secret_access_key": ""}, "JOBGATE_S3_ACCESS_KEY_ID"),
    ],
)
async def test_malformed_s3_settings_are_config_errors_naming_them(
    tmp_path: Path, changes: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        await open_backends(s3_settings(tmp_path, **changes), Catalog([]), serves_api=False)


def test_s3_settings_come_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "JOBGATE_DATA_DIR": str(tmp_path),
            "JOBGATE_BLOB_STORE_URL": "s3://bucket/prefix",
            "JOBGATE_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "JOBGATE_S3_REGION": "eu-west-1",
            "JOBGATE_S3_ACCESS_KEY_ID": "key",
            "JOBGATE_S3_SECRET_ACCESS_KEY": "secret",
            "JOBGATE_S3_CREATE_BUCKET": "false",
            "JOBGATE_UPLOAD_MAX_BYTES": "1024",
        }
    )

    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert (settings.s3_region, settings.s3_create_bucket) == ("eu-west-1", False)
    assert settings.upload_max_bytes == 1024
    assert "secret" not in repr(settings)


def test_a_malformed_create_bucket_flag_is_a_config_error(tmp_path: Path) -> None:
    env = {"JOBGATE_DATA_DIR": str(tmp_path), "JOBGATE_S3_CREATE_BUCKET": "maybe"}

    with pytest.raises(ConfigError, match="JOBGATE_S3_CREATE_BUCKET='maybe'"):
        Settings.from_env(env)


async def test_urls_are_signed_for_the_public_endpoint_and_work_through_it(
    s3_config: S3Config,
) -> None:
    # Callers reach the same server by another name than this process does.
    endpoint = urlsplit(s3_config.endpoint_url or "")
    public = f"http://localhost:{endpoint.port}"
    store = await S3BlobStore.open(replace(s3_config, public_endpoint_url=public))
    try:
        await store.put("public.txt", DATA, "text/plain")
        download = await store.download_url("public.txt", timedelta(minutes=1))
        upload = await store.upload_url("up.txt", "text/plain", 4, timedelta(minutes=1))

        assert download.startswith(public + "/") and upload.url.startswith(public + "/")
        assert await asyncio.to_thread(fetch, download) == DATA
    finally:
        await store.close()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()
