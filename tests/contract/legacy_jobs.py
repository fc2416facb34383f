"""Job databases as the stores wrote them before leases and the outbox, one writer per adapter.

Each writer leaves, where the adapter's contract factory opens its store, a queued job
(LEGACY_QUEUED) and a running one at attempt 1 (LEGACY_RUNNING) in the old shape: no lease, no
published flag. Opening the store there must upgrade it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pymongo import AsyncMongoClient

from core.adapters import codec
from core.adapters.postgres import load_migrations, migrate
from core.jobs import JobInput

LEGACY_QUEUED = "legacy-queued"
LEGACY_RUNNING = "legacy-running"
_CREATED = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
# (id, state, attempt, event_sequence, create_time)
_JOBS = [
    (LEGACY_QUEUED, "QUEUED", 0, 1, _CREATED),
    (LEGACY_RUNNING, "RUNNING", 1, 2, _CREATED + timedelta(seconds=1)),
]
_INPUT = codec.input_to_dict(JobInput(prompt="from before leases"))

# The jobs table of the first SQLite release.
_SQLITE_JOBS_V1 = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    model TEXT NOT NULL,
    input TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    progress TEXT,
    outputs TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    create_time INTEGER NOT NULL,
    start_time INTEGER,
    end_time INTEGER,
    event_sequence INTEGER NOT NULL DEFAULT 0,
    request_id TEXT,
    fingerprint TEXT NOT NULL,
    UNIQUE (owner, request_id)
)
"""


async def _write_sqlite(request: pytest.FixtureRequest) -> None:
    # Where the contract factory (tests/contract/conftest.py) opens the SQLite job store.
    path = Path(request.getfixturevalue("tmp_path")) / "jobs.db"
    conn = sqlite3.connect(path)
    try:
        conn.execute(_SQLITE_JOBS_V1)
        conn.executemany(
            "INSERT INTO jobs (id, owner, model, input, state, attempt, create_time,"
            " start_time, event_sequence, fingerprint) VALUES (?, 'alice', 'local/echo', ?, ?, ?,"
            " ?, ?, ?, '')",
            [
                (
                    job_id,
                    codec.dumps(_INPUT),
                    state,
                    attempt,
                    codec.time_to_micros(created),
                    codec.time_to_micros(created) if attempt else None,
                    sequence,
                )
                for job_id, state, attempt, sequence, created in _JOBS
            ],
        )
        conn.commit()
    finally:
        conn.close()


async def _write_postgres(request: pytest.FixtureRequest) -> None:
    conn = await asyncpg.connect(request.getfixturevalue("postgres_url"))
    try:
        await migrate(conn, load_migrations("jobs")[:1])
        await conn.executemany(
            "INSERT INTO jobs (id, owner, model, input, state, attempt, create_time, start_time,"
            " event_sequence, fingerprint)"
            " VALUES ($1, 'alice', 'local/echo', $2::jsonb, $3, $4, $5, $6, $7, '')",
            [
                (
                    job_id,
                    codec.dumps(_INPUT),
                    state,
                    attempt,
                    created,
                    created if attempt else None,
                    sequence,
                )
                for job_id, state, attempt, sequence, created in _JOBS
            ],
        )
    finally:
        await conn.close()


async def _write_mongo(request: pytest.FixtureRequest) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        request.getfixturevalue("mongo_database_url")
    )
    try:
        documents = [
            {
                "_id": job_id,
                "owner": "alice",
                "model": "local/echo",
                "input": {**_INPUT, "options": codec.dumps(_INPUT["options"])},
                "state": state,
                "attempt": attempt,
                "progress": None,
                "outputs": [],
                "error": None,
                "create_time": codec.time_to_micros(created),
                "start_time": codec.time_to_micros(created) if attempt else None,
                "end_time": None,
                "event_sequence": sequence,
                "flushed": 0,
                "fingerprint": "",
                "events": [],
            }
            for job_id, state, attempt, sequence, created in _JOBS
        ]
        await client.get_default_database().jobs.insert_many(documents)
    finally:
        await client.close()


LEGACY_WRITERS: dict[str, Callable[[pytest.FixtureRequest], Awaitable[None]]] = {
    "sqlite": _write_sqlite,
    "postgresql": _write_postgres,
    "mongodb": _write_mongo,
}
