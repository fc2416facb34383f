"""CreateUpload end to end, over gRPC, with a worker, on the local blob store and on S3: a caller
uploads a file with plain HTTP and names it as a job input; only its reference travels."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from jobgate import AsyncJobClient, JobClient
from jobgate.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

from core.adapters.s3_blobs import S3Config
from core.backends import Backends, open_backends
from core.jobs import BlobRef, JobState
from core.providers.registry import builtin_registry
from core.settings import Settings
from server.app import JobgateServer
from server.uploads import safe_file_name
from tests.server.support import funded_key, job_request, rich_error
from workers.runtime import Worker

DATA = b"MARKER-7f3a-upload-bytes-never-in-a-document\n" * 30
TIMEOUT = 10.0
JOBGATE = Path(sys.executable).parent / "jobgate"


@dataclass
class Gateway:
    """A server and a worker over one set of backends, and two tenants' credentials."""

    backends: Backends
    stub: job_service_pb2_grpc.JobServiceStub
    address: str
    api_key: str
    other_key: str

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.api_key}"),)

    @property
    def other_auth(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.other_key}"),)


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture(params=["local", "s3"])
def upload_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "local":
        return settings
    config: S3Config = request.getfixturevalue("s3_config")
    return replace(
        settings,
        blob_store_url=f"s3://{config.bucket}/{config.prefix}",
        s3_endpoint_url=config.endpoint_url or "",
        s3_region=config.region or "",
        s3_access_key_id=config.access_key_id or "",
        s3_secret_access_key=config.secret_access_key or "",
    )


@pytest.fixture
async def start_gateway(upload_settings: Settings) -> AsyncIterator[StartGateway]:
    """start_gateway(**settings_changes): a server and a worker until the end of the test."""
    stops: list[Callable[[], Awaitable[None]]] = []

    async def start(**changes: object) -> Gateway:
        settings = replace(upload_settings, **changes)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        registry = builtin_registry()
        backends = await open_backends(settings, registry.catalog, serves_api=True)
        stops.append(backends.close)
        worker = Worker(backends, registry, concurrency=2)
        worker_task = asyncio.create_task(worker.run())
        server = JobgateServer(settings, backends)
        port = await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

        async def stop() -> None:
            await channel.close()
            await server.stop(0)
            await worker.stop(1.0)
            await worker_task

        stops.append(stop)
        return Gateway(
            backends,
            job_service_pb2_grpc.JobServiceStub(channel),
            f"127.0.0.1:{port}",
            await funded_key(backends, "alice"),
            await funded_key(backends, "bob"),
        )

    yield start
    for stop in reversed(stops):
        await stop()


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


async def create_upload(
    gateway: Gateway, size: int = len(DATA), filename: str = "notes.txt", content_type: str = ""
) -> job_service_pb2.CreateUploadResponse:
    request = job_service_pb2.CreateUploadRequest(
        content_type=content_type or "text/plain", size_bytes=size, filename=filename
    )
    return await gateway.stub.CreateUpload(request, metadata=gateway.auth, timeout=TIMEOUT)


def _put(upload: job_service_pb2.CreateUploadResponse, data: bytes) -> int:
    request = urllib.request.Request(
        upload.upload_uri,
        data=data,
        method=upload.upload_method,
        headers=dict(upload.upload_headers),
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return error.code


async def put(upload: job_service_pb2.CreateUploadResponse, data: bytes = DATA) -> int:
    return await asyncio.to_thread(_put, upload, data)


async def run_echo(gateway: Gateway, key: str) -> job_pb2.Job:
    request = job_request(prompt="with a file", files=[key])
    created = await gateway.stub.CreateJob(request, metadata=gateway.auth, timeout=TIMEOUT)
    async for _ in gateway.stub.WatchJob(
        job_service_pb2.WatchJobRequest(name=created.job.name),
        metadata=gateway.auth,
        timeout=TIMEOUT,
    ):
        pass
    response = await gateway.stub.GetJob(
        job_service_pb2.GetJobRequest(name=created.job.name), metadata=gateway.auth
    )
    return response.job


def json_output(job: job_pb2.Job, label: str) -> object:
    (output,) = [o for o in job.outputs if o.label == label]
    return json_format.MessageToDict(output.json)


async def test_an_uploaded_file_is_a_job_input_by_reference(gateway: Gateway) -> None:
    upload = await create_upload(gateway)

    assert await put(upload) == 200
    job = await run_echo(gateway, upload.blob.key)

    assert job.state == job_pb2.Job.State.STATE_SUCCEEDED
    sha256 = hashlib.sha256(DATA).hexdigest()
    expected = {
        "key": upload.blob.key,
        "content_type": "text/plain",
        "size_bytes": len(DATA),
        "sha256": sha256,
    }
    assert json_output(job, "files") == {"files": [expected]}
    stored = await gateway.backends.jobs.get(job.name.removeprefix("jobs/"))
    assert stored is not None and stored.state is JobState.SUCCEEDED
    assert stored.input.files == (BlobRef(upload.blob.key, "text/plain", len(DATA), sha256),)
    assert list(stored.input.to_dict()["files"]) == [expected]


async def test_no_file_bytes_reach_the_job_store(gateway: Gateway, settings: Settings) -> None:
    upload = await create_upload(gateway)
    assert await put(upload) == 200

    await run_echo(gateway, upload.blob.key)

    marker = DATA.splitlines()[0]
    stored = b"".join(p.read_bytes() for p in settings.data_dir.glob("jobs.db*"))
    assert stored and marker not in stored


async def test_an_upload_key_is_the_callers_unique_and_keeps_a_safe_file_name(
    gateway: Gateway,
) -> None:
    first = await create_upload(gateway, filename="../../etc/pass wd.txt")
    second = await create_upload(gateway, filename="../../etc/pass wd.txt")
    unnamed = await create_upload(gateway, filename="")

    assert first.blob.key != second.blob.key
    for upload in (first, second, unnamed):
        assert upload.blob.key.startswith("tenants/alice/uploads/")
        assert upload.upload_method == "PUT"
        assert upload.upload_headers["Content-Type"] == "text/plain"
        assert upload.upload_headers["Content-Length"] == str(len(DATA))
        assert upload.expire_time.seconds > 0
    assert first.blob.key.endswith("/pass_wd.txt")
    assert unnamed.blob.key.endswith("/file")
    assert (first.blob.content_type, first.blob.size_bytes) == ("text/plain", len(DATA))


@pytest.mark.parametrize(
    ("filename", "safe"),
    [("cat.png", "cat.png"), ("a..b", "a.b"), ("...", "file"), ("C:\\x\\y.png", "y.png")],
)
def test_file_names_are_made_safe_for_keys(filename: str, safe: str) -> None:
    assert safe_file_name(filename) == safe


async def test_another_tenants_upload_is_not_an_input(gateway: Gateway) -> None:
    upload = await create_upload(gateway)
    assert await put(upload) == 200

    request = job_request(prompt="steal", files=[upload.blob.key])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.CreateJob(request, metadata=gateway.other_auth, timeout=TIMEOUT)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.info.reason == "BLOB_NOT_FOUND"
    assert error.bad_fields == ("job.input.files[0]",)


async def test_an_upload_never_sent_is_not_an_input(gateway: Gateway) -> None:
    upload = await create_upload(gateway)

    request = job_request(prompt="too soon", files=[upload.blob.key])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.CreateJob(request, metadata=gateway.auth, timeout=TIMEOUT)

    assert rich_error(caught.value).info.reason == "BLOB_NOT_FOUND"


async def test_an_upload_above_the_limit_is_refused(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(upload_max_bytes=1000)

    assert (await create_upload(gateway, size=1000)).blob.size_bytes == 1000
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create_upload(gateway, size=1001)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.bad_fields == ("size_bytes",)


async def test_sending_more_or_other_bytes_than_declared_is_refused(gateway: Gateway) -> None:
    upload = await create_upload(gateway, size=10)

    assert await put(upload, b"0123456789") == 200
    other = await create_upload(gateway, size=10)
    del other.upload_headers["Content-Length"]
    assert await put(other, b"0123456789-and-more") in (400, 403)


async def test_an_upload_after_its_url_expired_is_refused(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(upload_url_ttl_seconds=1)
    upload = await create_upload(gateway)
    await asyncio.sleep(2.1)

    assert await put(upload) == 403
    request = job_request(prompt="late", files=[upload.blob.key])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.CreateJob(request, metadata=gateway.auth, timeout=TIMEOUT)
    assert rich_error(caught.value).info.reason == "BLOB_NOT_FOUND"


@pytest.mark.parametrize(
    ("content_type", "size", "field"),
    [("not a type", 1, "content_type"), ("text/plain", -1, "size_bytes")],
)
async def test_bad_upload_requests_name_their_field(
    gateway: Gateway, content_type: str, size: int, field: str
) -> None:
    request = job_service_pb2.CreateUploadRequest(content_type=content_type, size_bytes=size)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.CreateUpload(request, metadata=gateway.auth, timeout=TIMEOUT)

    assert rich_error(caught.value).bad_fields == (field,)


async def test_create_upload_needs_an_api_key(gateway: Gateway) -> None:
    request = job_service_pb2.CreateUploadRequest(content_type="text/plain", size_bytes=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.CreateUpload(request, timeout=TIMEOUT)

    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_async_client_uploads_a_path_and_submits_it(
    gateway: Gateway, tmp_path: Path
) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(DATA)
    async with AsyncJobClient(gateway.address, gateway.api_key) as client:
        blob = await client.upload(path)
        job = await client.submit("local/echo", "look", files=[blob])
        done = await client.result(job.name, timeout=TIMEOUT)

    assert blob.content_type == "image/png" and blob.key.endswith("/photo.png")
    (described,) = json_output(done, "files")["files"]  # type: ignore[index]
    assert described["sha256"] == hashlib.sha256(DATA).hexdigest()


async def test_the_sync_client_uploads_bytes(gateway: Gateway) -> None:
    def upload_and_run() -> tuple[job_pb2.BlobRef, job_pb2.Job]:
        with JobClient(gateway.address, gateway.api_key) as client:
            blob = client.upload(b"{}", "application/json", filename="data.json")
            job = client.submit("local/echo", "look", files=[blob])
            return blob, client.result(job.name, timeout=TIMEOUT)

    blob, done = await asyncio.to_thread(upload_and_run)

    assert (blob.content_type, blob.size_bytes) == ("application/json", 2)
    assert done.state == job_pb2.Job.State.STATE_SUCCEEDED


async def test_the_cli_uploads_files_before_submitting(gateway: Gateway, tmp_path: Path) -> None:
    path = tmp_path / "input.txt"
    path.write_bytes(DATA)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBGATE_")}
    env |= {"JOBGATE_ADDRESS": gateway.address, "JOBGATE_API_KEY": gateway.api_key}
    process = await asyncio.create_subprocess_exec(
        str(JOBGATE),
        *("submit", "local/echo", "--prompt", "hi", "--file", str(path), "--watch", "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 0, stderr.decode()
    assert hashlib.sha256(DATA).hexdigest() in stdout.decode()
    assert json.loads(stdout.decode().splitlines()[-1])
