"""Runs `jobgate dev` in its own process for a benchmark: load and service get a core each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from launcher.embedded import read_banner

JOBGATE = str(Path(sys.executable).parent / "jobgate")


@dataclass(frozen=True)
class RunningService:
    address: str
    api_key: str
    pid: int

    @property
    def metadata(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.api_key}"),)


@contextmanager
def embedded_service(**env: str) -> Iterator[RunningService]:
    with tempfile.TemporaryDirectory(prefix="jobgate-bench-") as data_dir:
        environment = {
            **os.environ,
            "JOBGATE_DATA_DIR": data_dir,
            "JOBGATE_LISTEN": "127.0.0.1:0",
            "JOBGATE_BLOB_HTTP_LISTEN": "127.0.0.1:0",
            **env,
        }
        process = subprocess.Popen(
            [JOBGATE, "dev"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=environment,
        )
        assert process.stdout is not None
        try:
            address, key = read_banner(process.stdout)
        except ValueError:
            process.kill()
            raise
        try:
            yield RunningService(address, key, process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
