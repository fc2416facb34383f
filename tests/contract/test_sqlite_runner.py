"""The SQLite runner under the embedded stores: group commit with per-request isolation."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from core.adapters.sqlite import RunnerClosed, SqliteRunner


def _schema(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS items (n INTEGER PRIMARY KEY)")


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[SqliteRunner]:
    runner = await SqliteRunner.open(tmp_path / "test.db", _schema)
    yield runner
    await runner.close()


def insert(n: int) -> Callable[[sqlite3.Connection], int]:
    def run(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO items (n) VALUES (?)", (n,))
        return n

    return run


def insert_then_fail(n: int) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO items (n) VALUES (?)", (n,))
        raise LookupError(f"request {n} fails after writing")

    return run


def numbers(conn: sqlite3.Connection) -> list[int]:
    return [n for (n,) in conn.execute("SELECT n FROM items ORDER BY n")]


async def test_a_failing_request_undoes_only_its_own_writes(runner: SqliteRunner) -> None:
    results = await asyncio.gather(
        runner.run(insert(1)),
        runner.run(insert_then_fail(2)),
        runner.run(insert(3)),
        runner.run(insert(1)),
        return_exceptions=True,
    )

    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], LookupError)
    assert isinstance(results[3], sqlite3.IntegrityError)
    assert await runner.run(numbers) == [1, 3]


async def test_close_finishes_what_was_submitted_then_refuses_more(tmp_path: Path) -> None:
    runner = await SqliteRunner.open(tmp_path / "test.db", _schema)
    pending = [asyncio.ensure_future(runner.run(insert(n))) for n in range(100)]
    await asyncio.sleep(0)

    await runner.close()
    await runner.close()

    assert [await p for p in pending] == list(range(100))
    with pytest.raises(RunnerClosed):
        await runner.run(numbers)
    reopened = await SqliteRunner.open(tmp_path / "test.db", _schema)
    try:
        assert len(await reopened.run(numbers)) == 100
    finally:
        await reopened.close()


async def test_an_unopenable_database_fails_to_open(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        await SqliteRunner.open(tmp_path / "missing-dir" / "test.db")
