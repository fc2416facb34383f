"""A jobgate cluster of processes on this machine: one `python -m server` and N
`python -m workers`, for the multi-process tests and benchmarks, and to try production mode."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass
class Cluster:
    addresses: list[str]
    servers: list[subprocess.Popen[bytes]]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: Path = Path()

    @property
    def address(self) -> str:
        return self.addresses[0]

    @property
    def server(self) -> subprocess.Popen[bytes]:
        return self.servers[0]

    def log_tail(self, chars: int = 1500) -> str:
        return "\n".join(f"{f.name}: {f.read_text()[-chars:]}" for f in sorted(self.logs.iterdir()))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def local_cluster(env: dict[str, str], workers: int, servers: int = 1) -> Iterator[Cluster]:
    """Starts `servers` server and `workers` worker processes with `env` over this environment,
    waits until every server is SERVING, and stops them all (SIGTERM) at the end. Each logs to a
    file: a pipe nobody reads would block it."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(servers)]
    listens = addresses + [addresses[0]] * workers  # workers listen on nothing; any will do
    modules = ["server"] * servers + ["workers"] * workers
    with tempfile.TemporaryDirectory(prefix="jobgate-cluster-logs-") as logs:
        processes = []
        for index, (module, listen) in enumerate(zip(modules, listens, strict=True)):
            environment = {**os.environ, **env, "JOBGATE_LISTEN": listen}
            with Path(logs, f"{index}-{module}.log").open("wb") as log:
                command = [sys.executable, "-m", module]
                processes.append(subprocess.Popen(command, env=environment, stdout=log, stderr=log))
        cluster = Cluster(addresses, processes[:servers], processes[servers:], Path(logs))
        try:
            for address in addresses:
                _wait_serving(cluster, address)
            yield cluster
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=30)


def _wait_serving(cluster: Cluster, address: str) -> None:
    processes = [*cluster.servers, *cluster.workers]
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in processes):
                raise RuntimeError(f"a jobgate process exited at start:\n{cluster.log_tail()}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise TimeoutError(f"jobgate did not serve on {address} within 30 s")
