"""The README's examples run as written."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def test_quickstart_prints_progress_and_the_result(endpoint: Any) -> None:
    env = {**os.environ, "JOBGATE_ADDRESS": endpoint.address, "JOBGATE_API_KEY": endpoint.api_key}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "quickstart.py"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].startswith(" 10%") and lines[-2].startswith("100%")
    assert lines[-1].startswith("jobs/") and lines[-1].endswith("slept 1 s")
