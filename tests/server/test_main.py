"""`python -m server`: starts from JOBGATE_* variables, says where it listens, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


async def test_the_server_runs_alone_and_drains_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "JOBGATE_DATA_DIR": str(tmp_path / "data"),
        "JOBGATE_LISTEN": "127.0.0.1:0",
        "JOBGATE_BLOB_HTTP_LISTEN": "127.0.0.1:0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    address = None
    while address is None:
        line = (await asyncio.wait_for(process.stderr.readline(), timeout=20)).decode()
        assert line, "the server exited before listening"
        if found := re.search(r"listening on (\S+)", line):
            address = found[1]

    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    process.send_signal(signal.SIGTERM)
    rest = (await asyncio.wait_for(process.stderr.read(), timeout=20)).decode()

    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert await process.wait() == 0
    assert "stopped" in rest and "Traceback" not in rest
