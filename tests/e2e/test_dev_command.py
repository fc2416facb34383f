"""`jobgate dev`, the newcomer's first command, as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

JOBGATE = str(Path(sys.executable).parent / "jobgate")
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def start_dev(data_dir: Path) -> tuple[subprocess.Popen[str], str, str]:
    env = {**os.environ, "JOBGATE_BLOB_HTTP_LISTEN": "127.0.0.1:0"}
    process = subprocess.Popen(
        [JOBGATE, "dev", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "api key" in line:
            break
    banner = "".join(lines)
    address = re.search(r"address\s+(\S+)", banner)
    key = re.search(r"api key\s+(\S+)", banner)
    assert address and key, banner
    return process, address.group(1), key.group(1)


def test_dev_serves_a_job_from_its_banner_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    process, address, key = start_dev(tmp_path)
    try:
        body = json.dumps({"job": {"model": "local/echo", "input": {"prompt": "hi"}}})
        created = subprocess.run(
            [GRPCURL, "-plaintext", "-H", f"authorization: Bearer {key}", "-d", body, address,
             "jobgate.v1.JobService/CreateJob"],
            capture_output=True, text=True, timeout=30, check=True,
        )
        assert json.loads(created.stdout)["job"]["state"] == "STATE_QUEUED"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_dev_prints_the_same_key_after_a_restart(tmp_path: Path) -> None:
    keys = []
    for _ in range(2):
        process, _, key = start_dev(tmp_path)
        keys.append(key)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    assert keys[0] == keys[1]
