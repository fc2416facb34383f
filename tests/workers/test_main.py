"""`python -m workers`: a worker process that starts from the environment and drains on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workers"],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_worker_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    process = start({"JOBGATE_DATA_DIR": str(tmp_path), "JOBGATE_WORKER_CONCURRENCY": "2"})
    assert process.stderr is not None
    for line in process.stderr:
        if "worker running" in line:
            break

    process.send_signal(signal.SIGTERM)
    rest = process.communicate(timeout=20)[1]

    assert process.returncode == 0
    assert "worker stopping" in rest and "Traceback" not in rest


def test_a_worker_asked_for_a_model_it_cannot_run_exits_with_one_line(tmp_path: Path) -> None:
    process = start({"JOBGATE_DATA_DIR": str(tmp_path), "JOBGATE_WORKER_MODELS": "nope/model"})

    errors = process.communicate(timeout=20)[1]

    assert process.returncode == 2
    assert "nope/model" in errors and "Traceback" not in errors
