"""The `jobgate` command line, run as a real process against a real jobgate."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from launcher.embedded import Endpoint

JOBGATE = Path(sys.executable).parent / "jobgate"


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines()]


async def jobgate(
    *args: str, endpoint: Endpoint | None = None, env: dict[str, str] | None = None
) -> Run:
    """Runs the CLI without blocking the event loop the service runs on."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("JOBGATE_")}
    if endpoint is not None:
        environment |= {"JOBGATE_ADDRESS": endpoint.address, "JOBGATE_API_KEY": endpoint.api_key}
    environment |= env or {}
    process = await asyncio.create_subprocess_exec(
        str(JOBGATE),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


def error_lines(run: Run) -> list[str]:
    """stderr without the warnings of plugins that failed to load."""
    return [line for line in run.stderr.splitlines() if "warning: skipped plugin" not in line]


async def test_submit_watch_json_streams_one_object_per_line_to_success(
    endpoint: Endpoint,
) -> None:
    run = await jobgate(
        "--address", endpoint.address, "--api-key", endpoint.api_key,
        "submit", "local/echo", "--prompt", "hi", "--watch", "--json",
    )  # fmt: skip

    assert run.code == 0, run.stderr
    snapshot, *rest = run.json_lines()
    assert snapshot["job"]["model"] == "local/echo"
    events = [line["event"] for line in rest if "event" in line]  # queuePosition lines too
    # The job may finish before the watch starts: then the snapshot already holds everything.
    outputs = snapshot["job"].get("outputs", []) + [e["output"] for e in events if "output" in e]
    final = events[-1]["stateChange"]["state"] if events else snapshot["job"]["state"]
    assert [output["text"] for output in outputs] == ["hi"]
    assert final == "STATE_SUCCEEDED"


async def test_submit_prints_the_queued_job(endpoint: Endpoint) -> None:
    run = await jobgate("submit", "local/echo", "--prompt", "hi", endpoint=endpoint)

    assert run.code == 0, run.stderr
    assert "jobs/" in run.stdout and "QUEUED" in run.stdout and "local/echo" in run.stdout


async def test_options_are_json_when_they_parse_and_strings_otherwise(
    endpoint: Endpoint,
) -> None:
    run = await jobgate(
        "submit", "local/echo", "--prompt", "o", "--json",
        "--option", "steps=3", "--option", "style=noir", "--option", 'tags=["a"]',
        "--request-id", "cli-req-1",
        endpoint=endpoint,
    )  # fmt: skip

    assert run.code == 0, run.stderr
    (job,) = run.json_lines()
    assert job["input"]["options"] == {"steps": 3, "style": "noir", "tags": ["a"]}


async def test_typed_input_flags_reach_the_job(endpoint: Endpoint) -> None:
    run = await jobgate(
        "submit", "local/image", "--prompt", "fox", "--size", "32x32", "--seed", "7", "--json",
        endpoint=endpoint,
    )  # fmt: skip

    assert run.code == 0, run.stderr
    (job,) = run.json_lines()
    assert job["input"]["size"] == "32x32"
    assert job["input"]["seed"] == "7"  # int64 is a string in protobuf's JSON


async def test_a_failing_job_exits_1_with_its_reason(endpoint: Endpoint) -> None:
    run = await jobgate("submit", "local/fail", "--prompt", "x", "--watch", endpoint=endpoint)

    assert run.code == 1
    assert run.stdout.splitlines()[-1].startswith("FAILED")
    assert "REQUESTED_FAILURE" in run.stdout


async def test_watching_a_sleep_prints_progress_lines_when_not_on_a_terminal(
    endpoint: Endpoint,
) -> None:
    run = await jobgate("submit", "local/sleep", "--duration", "0.3", "--watch", endpoint=endpoint)

    assert run.code == 0, run.stderr
    progress = [line for line in error_lines(run) if line.startswith("RUNNING")]
    assert len(progress) >= 3 and "\r" not in run.stderr
    assert "100%" in progress[-1]
    assert run.stdout.splitlines()[-1] == "SUCCEEDED"
    assert "output  result:" in run.stdout


async def test_on_a_terminal_the_progress_line_redraws_in_place(endpoint: Endpoint) -> None:
    leader, follower = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            str(JOBGATE), "--address", endpoint.address, "--api-key", endpoint.api_key,
            "submit", "local/sleep", "--duration", "0.3", "--watch",
            stdout=asyncio.subprocess.PIPE, stderr=follower,
        )  # fmt: skip
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        os.set_blocking(leader, False)
        terminal = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)

    assert process.returncode == 0
    assert terminal.count("\r\x1b[K") >= 3 and "RUNNING" in terminal
    assert stdout.decode().splitlines()[-1] == "SUCCEEDED"


async def test_get_list_cancel_and_watch(endpoint: Endpoint) -> None:
    submitted = await jobgate(
        "submit", "local/sleep", "--duration", "30", "--json", endpoint=endpoint
    )
    name = json.loads(submitted.stdout)["name"]

    got = await jobgate("get", name.removeprefix("jobs/"), endpoint=endpoint)
    listed = await jobgate("list", "--model", "local/sleep", endpoint=endpoint)
    cancelled = await jobgate("cancel", name, endpoint=endpoint)
    watched = await jobgate("watch", name, endpoint=endpoint)

    assert got.code == 0 and f"name      {name}" in got.stdout
    assert listed.code == 0 and listed.stdout.split()[:5] == [
        "NAME", "STATE", "MODEL", "PROGRESS", "CREATED"
    ]  # fmt: skip
    assert name in listed.stdout
    assert cancelled.code == 0 and "CANCELLED" in cancelled.stdout
    assert watched.code == 1 and watched.stdout.splitlines()[-1].startswith("CANCELLED")


async def test_list_json_honours_the_limit(endpoint: Endpoint) -> None:
    for i in range(3):
        assert (
            await jobgate("submit", "local/echo", "--prompt", str(i), endpoint=endpoint)
        ).code == 0

    run = await jobgate("list", "--limit", "2", "--json", endpoint=endpoint)

    assert run.code == 0
    assert [job["input"]["prompt"] for job in run.json_lines()] == ["2", "1"]


async def test_models_lists_the_catalog(endpoint: Endpoint) -> None:
    table = await jobgate("models", endpoint=endpoint)
    as_json = await jobgate("models", "--json", endpoint=endpoint)

    assert table.code == 0 and "local/echo" in table.stdout and "PRICE" in table.stdout
    assert "local/sleep" in {model["id"] for model in as_json.json_lines()}


async def test_an_rpc_error_is_one_line_on_stderr_and_exit_3(endpoint: Endpoint) -> None:
    missing = await jobgate("get", "jobs/missing", endpoint=endpoint)
    unknown = await jobgate("submit", "nobody/nothing", "--prompt", "x", endpoint=endpoint)
    bad_key = await jobgate("models", endpoint=endpoint, env={"JOBGATE_API_KEY": "wrong"})

    assert missing.code == 3
    (line,) = error_lines(missing)
    assert line.startswith("error: NOT_FOUND (JOB_NOT_FOUND): ") and "jobs/missing" in line
    assert unknown.code == 3
    assert error_lines(unknown)[0].startswith("error: INVALID_ARGUMENT (UNKNOWN_MODEL): ")
    assert bad_key.code == 3
    assert error_lines(bad_key)[0].startswith("error: UNAUTHENTICATED (API_KEY_INVALID): ")
    assert "Traceback" not in missing.stderr + unknown.stderr + bad_key.stderr


async def test_usage_errors_exit_2(endpoint: Endpoint) -> None:
    no_key = await jobgate("models", env={"JOBGATE_ADDRESS": endpoint.address})
    bad_option = await jobgate("submit", "local/echo", "--option", "novalue", endpoint=endpoint)
    bad_state = await jobgate("list", "--state", "sleepy", endpoint=endpoint)
    no_command = await jobgate(endpoint=endpoint)

    assert no_key.code == 2
    assert "no API key: pass --api-key or set JOBGATE_API_KEY" in no_key.stderr
    assert bad_option.code == 2 and "expected KEY=VALUE" in bad_option.stderr
    assert bad_state.code == 2 and "invalid choice" in bad_state.stderr
    assert no_command.code == 2 and "usage:" in no_command.stderr


@pytest.fixture
def plugins(tmp_path: Path) -> dict[str, str]:
    """A site folder with two installed plugin distributions: one adds `hello`, one is broken."""
    site = tmp_path / "site"
    for name, module, source in [
        (
            "hello",
            "hello_plugin",
            "def register(subparsers):\n"
            "    parser = subparsers.add_parser('hello', help='say hello')\n"
            "    parser.set_defaults(func=lambda args: print('hello from a plugin') or 0)\n",
        ),
        ("broken", "broken_plugin", "raise RuntimeError('this plugin is broken')\n"),
    ]:
        dist_info = site / f"{module}-0.1.dist-info"
        dist_info.mkdir(parents=True)
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n"
        )
        (dist_info / "entry_points.txt").write_text(
            f"[jobgate.commands]\n{name} = {module}:register\n"
        )
        (site / f"{module}.py").write_text(source)
    return {"PYTHONPATH": str(site)}


async def test_plugin_commands_load_and_a_broken_one_is_skipped(
    endpoint: Endpoint, plugins: dict[str, str]
) -> None:
    hello = await jobgate("hello", env=plugins)
    models = await jobgate("models", endpoint=endpoint, env=plugins)

    assert hello.code == 0 and hello.stdout == "hello from a plugin\n"
    assert "skipped plugin command 'broken'" in hello.stderr
    assert "this plugin is broken" in hello.stderr
    assert models.code == 0 and "local/echo" in models.stdout
