"""What people debugging with grpcurl do, with the real grpcurl binary and no proto files."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


async def grpcurl(*args: str) -> tuple[int, str, str]:
    # Async: the server under test runs on this event loop.
    process = await asyncio.create_subprocess_exec(
        GRPCURL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_list_shows_the_services_through_reflection(endpoint: Any) -> None:
    code, out, err = await grpcurl("-plaintext", endpoint.address, "list")
    assert code == 0, err
    services = out.split()
    assert "jobgate.v1.JobService" in services and "grpc.health.v1.Health" in services


async def test_describe_shows_the_job_service(endpoint: Any) -> None:
    code, out, err = await grpcurl(
        "-plaintext", endpoint.address, "describe", "jobgate.v1.JobService"
    )
    assert code == 0, err
    assert "rpc WatchJob ( .jobgate.v1.WatchJobRequest ) returns ( stream" in out
    code, out, err = await grpcurl("-plaintext", endpoint.address, "describe", "jobgate.v1.Job")
    assert code == 0, err
    assert "STATE_CANCELLED" in out


async def test_health_check_answers_serving(endpoint: Any) -> None:
    code, out, err = await grpcurl(
        "-plaintext",
        "-d",
        '{"service": "jobgate.v1.JobService"}',
        endpoint.address,
        "grpc.health.v1.Health/Check",
    )
    assert code == 0, err
    assert json.loads(out) == {"status": "SERVING"}


async def test_create_then_watch_a_job_from_grpcurl(endpoint: Any) -> None:
    auth = f"authorization: Bearer {endpoint.api_key}"
    body = json.dumps({"job": {"model": "local/echo", "input": {"prompt": "from grpcurl"}}})
    code, out, err = await grpcurl(
        "-plaintext",
        "-H",
        auth,
        "-d",
        body,
        endpoint.address,
        "jobgate.v1.JobService/CreateJob",
    )
    assert code == 0, err
    name = json.loads(out)["job"]["name"]

    code, out, err = await grpcurl(
        "-plaintext",
        "-H",
        auth,
        "-d",
        json.dumps({"name": name}),
        endpoint.address,
        "jobgate.v1.JobService/WatchJob",
    )
    assert code == 0, err
    assert '"STATE_SUCCEEDED"' in out and "from grpcurl" in out


async def test_run_a_job_from_grpcurl_in_one_call(endpoint: Any) -> None:
    body = json.dumps({"job": {"model": "local/echo", "input": {"prompt": "run from grpcurl"}}})
    code, out, err = await grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {endpoint.api_key}",
        "-d",
        body,
        endpoint.address,
        "jobgate.v1.JobService/RunJob",
    )
    assert code == 0, err
    assert out.index('"STATE_QUEUED"') < out.index('"STATE_SUCCEEDED"')
    assert "run from grpcurl" in out


async def test_a_call_without_a_key_says_so(endpoint: Any) -> None:
    code, _, err = await grpcurl(
        "-plaintext", "-d", "{}", endpoint.address, "jobgate.v1.JobService/ListJobs"
    )
    assert code != 0
    assert "Unauthenticated" in err and "authorization" in err.lower()
