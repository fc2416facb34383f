"""`jobgate dev`, the newcomer's first command, as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from launcher.embedded import read_banner

JOBGATE = str(Path(sys.executable).parent / "jobgate")
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@contextmanager
def dev_process(data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """`jobgate dev` on free ports; yields it with the address and key its banner printed."""
    env = {**os.environ, "JOBGATE_BLOB_HTTP_LISTEN": "127.0.0.1:0"}
    command = [JOBGATE, "dev", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as process:
        assert process.stdout is not None
        try:
            yield process, *read_banner(process.stdout)
        finally:
            if process.poll() is None:
                process.kill()


def stop(process: subprocess.Popen[str], sig: signal.Signals) -> int:
    process.send_signal(sig)
    return process.wait(timeout=20)


def test_dev_serves_a_job_from_its_banner_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with dev_process(tmp_path) as (process, address, key):
        body = json.dumps({"job": {"model": "local/echo", "input": {"prompt": "hi"}}})
        created = subprocess.run(
            [
                GRPCURL,
                "-plaintext",
                "-H",
                f"authorization: Bearer {key}",
                "-d",
                body,
                address,
                "jobgate.v1.JobService/CreateJob",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert json.loads(created.stdout)["job"]["state"] == "STATE_QUEUED"
        assert stop(process, signal.SIGTERM) == 0


def test_dev_prints_the_same_key_after_a_restart(tmp_path: Path) -> None:
    keys = []
    for _ in range(2):
        with dev_process(tmp_path) as (process, _, key):
            keys.append(key)
            assert stop(process, signal.SIGINT) == 0
    assert keys[0] == keys[1]
