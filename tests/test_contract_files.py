"""The API contract: proto lint, breaking-change check, generated code in step with proto/."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import pytest
from jobgate.v1 import error_reason_pb2

from core.errors import Reason

REPO = Path(__file__).resolve().parent.parent
BUF = REPO / "node_modules" / ".bin" / "buf"
GENERATED = Path("clients/python/src/jobgate/v1")


def buf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def test_proto_passes_buf_lint() -> None:
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_proto_has_no_breaking_change_against_main() -> None:
    has_main = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "main"], cwd=REPO, capture_output=True
    )
    if has_main.returncode != 0:
        pytest.skip("no main branch in this checkout to compare against")
    result = subprocess.run(
        [str(REPO / "tools" / "buf-breaking"), "main"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_generated_code_matches_proto(tmp_path: Path) -> None:
    result = buf("generate", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    fresh, committed = tmp_path / GENERATED, REPO / GENERATED
    generated = sorted(p.name for p in fresh.iterdir())
    assert generated, "buf generate wrote nothing"
    _, mismatch, missing = filecmp.cmpfiles(committed, fresh, generated, shallow=False)
    assert not mismatch and not missing, (
        f"generated code is stale, run `make proto`: {mismatch + missing}"
    )


def test_domain_reasons_are_the_proto_error_reasons() -> None:
    proto_names = {
        name.removeprefix("ERROR_REASON_")
        for name in error_reason_pb2.ErrorReason.keys()  # noqa: SIM118 (an EnumTypeWrapper, not a dict)
        if name != "ERROR_REASON_UNSPECIFIED"
    }
    assert proto_names == {reason.value for reason in Reason}
