"""The JobStore on one SQLite file: jobs and their numbered events, every change fenced.

Each state change is one conditional UPDATE (legal source states, and the attempt where the port
fences by attempt) that also bumps `event_sequence`, plus the INSERT of the event under that
sequence, in one transaction: an event exists exactly when its change happened, and sequences
never skip or repeat.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.adapters import codec
from core.adapters.sqlite import SqliteRunner
from core.errors import AlreadyExists
from core.jobs import (
    EventPayload,
    Job,
    JobError,
    JobEvent,
    JobState,
    LogLine,
    NewJob,
    Output,
    Progress,
    ProviderTask,
    StateChanged,
    lease_end,
    sources_of,
)
from core.ports import Claimed, Held, JobQuery

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
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
    lease_expire_time INTEGER,
    published INTEGER NOT NULL DEFAULT 0,
    provider_task TEXT,
    billed INTEGER NOT NULL DEFAULT 0,
    usage_units INTEGER NOT NULL DEFAULT 0,
    UNIQUE (owner, request_id)
);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, create_time DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, model, create_time);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    sequence INTEGER NOT NULL,
    time INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (job_id, sequence)
) WITHOUT ROWID;
"""
# Times are integer microseconds since the epoch (UTC): they sort exactly.

# Columns added since the first release: a database created before gets them at open.
ADDED_COLUMNS = {
    "lease_expire_time": "INTEGER",
    "published": "INTEGER NOT NULL DEFAULT 0",
    "provider_task": "TEXT",
    "billed": "INTEGER NOT NULL DEFAULT 0",
    "usage_units": "INTEGER NOT NULL DEFAULT 0",
}
# Created once the columns it names exist. The outbox sweep reads it; a job leaves it as soon
# as it is published, claimed or cancelled, so it stays small.
UNPUBLISHED_INDEX = (
    "CREATE INDEX IF NOT EXISTS jobs_unpublished ON jobs (create_time, id)"
    " WHERE state = 'QUEUED' AND published = 0"
)

JOB_COLUMNS = (
    "id, owner, model, input, state, attempt, progress, outputs, error,"
    " create_time, start_time, end_time, event_sequence, request_id, lease_expire_time,"
    " provider_task, billed, usage_units"
)

_QUEUED = JobState.QUEUED.value
_RUNNING = JobState.RUNNING.value
_CANCEL_SOURCES = tuple(s.value for s in sources_of(JobState.CANCELLED))


class SqliteJobStore:
    """Jobs and events in SQLite; see core.ports.JobStore for the semantics."""

    def __init__(self, runner: SqliteRunner) -> None:
        self._db = runner

    @classmethod
    async def open(cls, path: Path) -> SqliteJobStore:
        return cls(await SqliteRunner.open(path, _create_schema))

    async def close(self) -> None:
        await self._db.close()

    async def create(self, job: NewJob) -> tuple[Job, bool]:
        return await self._db.run(lambda conn: _create(conn, job))

    async def get(self, job_id: str) -> Job | None:
        return await self._db.run(lambda conn: _select_job(conn, job_id))

    async def list(self, query: JobQuery) -> list[Job]:
        return await self._db.run(lambda conn: _list(conn, query))

    async def jobs_ahead(self, job: Job) -> int:
        return await self._db.run(lambda conn: _jobs_ahead(conn, job))

    async def claim(self, job_id: str, lease: timedelta = timedelta(0)) -> Claimed | Held | None:
        now = _now()
        until = lease_end(now, lease)
        return await self._db.run(lambda conn: _claim(conn, job_id, now, until))

    async def heartbeat(self, job_id: str, attempt: int, lease: timedelta) -> bool:
        until = codec.time_to_micros(lease_end(_now(), lease))
        return await self._db.run(lambda conn: _heartbeat(conn, job_id, attempt, until))

    async def record(
        self, job_id: str, attempt: int, payload: Progress | LogLine | Output
    ) -> JobEvent | None:
        if not isinstance(payload, Progress | LogLine | Output):
            raise TypeError(f"record() takes Progress, LogLine or Output, not {payload!r}")
        return await self._db.run(lambda conn: _record(conn, job_id, attempt, payload, _now()))

    async def set_provider_task(self, job_id: str, attempt: int, task: ProviderTask) -> bool:
        text = codec.dumps(codec.provider_task_to_dict(task))
        return await self._db.run(lambda conn: _set_provider_task(conn, job_id, attempt, text))

    async def finish(
        self,
        job_id: str,
        attempt: int,
        state: JobState,
        error: JobError | None = None,
        usage_units: int = 0,
    ) -> JobEvent | None:
        if not state.terminal:
            raise ValueError(f"finish() needs a terminal state, not {state}")
        now = _now()
        return await self._db.run(
            lambda conn: _finish(conn, job_id, attempt, state, error, usage_units, now)
        )

    async def cancel(self, job_id: str, error: JobError) -> tuple[Job, JobEvent | None] | None:
        return await self._db.run(lambda conn: _cancel(conn, job_id, error, _now()))

    async def events(self, job_id: str, after: int, limit: int = 1000) -> list[JobEvent]:
        return await self._db.run(lambda conn: _events(conn, job_id, after, limit))

    async def unfinished(self, limit: int = 1000) -> list[Job]:
        return await self._db.run(lambda conn: _unfinished(conn, limit))

    async def mark_published(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            ids = codec.dumps(list(job_ids))
            await self._db.run(lambda conn: _mark_published(conn, ids))

    async def unpublished(self, older_than: datetime, limit: int) -> list[Job]:
        micros = codec.time_to_micros(older_than)
        return await self._db.run(lambda conn: _unpublished(conn, micros, limit))


def _now() -> datetime:
    return datetime.now(UTC)


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    present = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    for column, definition in ADDED_COLUMNS.items():
        if column not in present:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")
    conn.execute(UNPUBLISHED_INDEX)


def _create(conn: sqlite3.Connection, job: NewJob) -> tuple[Job, bool]:
    fingerprint = job.fingerprint()
    create_time = codec.time_to_micros(job.create_time)
    inserted = conn.execute(
        "INSERT INTO jobs (id, owner, model, input, state, create_time, event_sequence,"
        " request_id, fingerprint, billed) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)"
        " ON CONFLICT (owner, request_id) DO NOTHING",
        (
            job.id,
            job.owner,
            job.model,
            codec.dumps(codec.input_to_dict(job.input)),
            JobState.QUEUED.value,
            create_time,
            job.request_id,
            fingerprint,
            int(job.billed),
        ),
    ).rowcount
    if inserted:
        _insert_event(conn, job.id, 1, create_time, 0, StateChanged(JobState.QUEUED))
        created = Job(
            id=job.id,
            owner=job.owner,
            model=job.model,
            input=job.input,
            state=JobState.QUEUED,
            create_time=codec.time_from_micros(create_time),
            event_sequence=1,
            request_id=job.request_id,
            billed=job.billed,
        )
        return created, True
    row = conn.execute(
        f"SELECT {JOB_COLUMNS}, fingerprint FROM jobs WHERE owner = ? AND request_id = ?",
        (job.owner, job.request_id),
    ).fetchone()
    if row[-1] != fingerprint:
        raise AlreadyExists(
            f"request_id {job.request_id!r} was already used for a different request"
        )
    return _job_from_row(row), False


def _select_job(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return _job_from_row(row) if row else None


def _list(conn: sqlite3.Connection, query: JobQuery) -> list[Job]:
    where = ["owner = ?"]
    params: list[Any] = [query.owner]
    if query.state is not None:
        where.append("state = ?")
        params.append(query.state.value)
    if query.model is not None:
        where.append("model = ?")
        params.append(query.model)
    if query.before is not None:
        before_time, before_id = query.before
        micros = codec.time_to_micros(before_time)
        where.append("(create_time < ? OR (create_time = ? AND id < ?))")
        params += [micros, micros, before_id]
    params.append(query.limit)
    rows = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)}"
        " ORDER BY create_time DESC, id DESC LIMIT ?",
        params,
    )
    return [_job_from_row(row) for row in rows]


def _jobs_ahead(conn: sqlite3.Connection, job: Job) -> int:
    micros = codec.time_to_micros(job.create_time)
    (count,) = conn.execute(
        "SELECT COUNT(*) FROM jobs WHERE state = ? AND model = ?"
        " AND (create_time < ? OR (create_time = ? AND id < ?))",
        (JobState.QUEUED.value, job.model, micros, micros, job.id),
    ).fetchone()
    return int(count)


def _claim(
    conn: sqlite3.Connection, job_id: str, now: datetime, until: datetime
) -> Claimed | Held | None:
    micros = codec.time_to_micros(now)
    row = conn.execute(
        "UPDATE jobs SET state = ?, attempt = attempt + 1, progress = NULL, outputs = '[]',"
        " start_time = ?, lease_expire_time = ?, event_sequence = event_sequence + 1"
        " WHERE id = ? AND (state = ? OR (state = ?"
        " AND (lease_expire_time IS NULL OR lease_expire_time <= ?)))"
        f" RETURNING {JOB_COLUMNS}",
        (_RUNNING, micros, codec.time_to_micros(until), job_id, _QUEUED, _RUNNING, micros),
    ).fetchone()
    if row is None:
        return _held(_select_job(conn, job_id), now)
    job = _job_from_row(row)
    event = _insert_event(
        conn, job_id, job.event_sequence, micros, job.attempt, StateChanged(JobState.RUNNING)
    )
    return Claimed(job, event)


def _held(job: Job | None, now: datetime) -> Held | None:
    """What a claim that changed nothing met: None for a missing or terminal job, else Held."""
    if job is None or job.state.terminal:
        return None
    return Held(job, job.lease_expire_time or now)


def _heartbeat(conn: sqlite3.Connection, job_id: str, attempt: int, until: int) -> bool:
    changed = conn.execute(
        "UPDATE jobs SET lease_expire_time = ? WHERE id = ? AND state = ? AND attempt = ?",
        (until, job_id, _RUNNING, attempt),
    ).rowcount
    return changed == 1


def _set_provider_task(conn: sqlite3.Connection, job_id: str, attempt: int, task: str) -> bool:
    changed = conn.execute(
        "UPDATE jobs SET provider_task = ? WHERE id = ? AND state = ? AND attempt = ?",
        (task, job_id, _RUNNING, attempt),
    ).rowcount
    return changed == 1


def _record(
    conn: sqlite3.Connection,
    job_id: str,
    attempt: int,
    payload: Progress | LogLine | Output,
    now: datetime,
) -> JobEvent | None:
    if isinstance(payload, Progress):
        change = "progress = ?,"
        values: tuple[Any, ...] = (codec.dumps(codec.progress_to_dict(payload)),)
    elif isinstance(payload, Output):
        change = "outputs = json_insert(outputs, '$[#]', json(?)),"
        values = (codec.dumps(codec.output_to_dict(payload)),)
    else:
        change, values = "", ()
    row = conn.execute(
        f"UPDATE jobs SET {change} event_sequence = event_sequence + 1"
        " WHERE id = ? AND state = ? AND attempt = ? RETURNING event_sequence",
        (*values, job_id, _RUNNING, attempt),
    ).fetchone()
    if row is None:
        return None
    return _insert_event(conn, job_id, row[0], codec.time_to_micros(now), attempt, payload)


def _finish(
    conn: sqlite3.Connection,
    job_id: str,
    attempt: int,
    state: JobState,
    error: JobError | None,
    usage_units: int,
    now: datetime,
) -> JobEvent | None:
    micros = codec.time_to_micros(now)
    row = conn.execute(
        "UPDATE jobs SET state = ?, error = ?, end_time = ?, lease_expire_time = NULL,"
        " usage_units = ?, event_sequence = event_sequence + 1"
        " WHERE id = ? AND state = ? AND attempt = ? RETURNING event_sequence",
        (state.value, _error_text(error), micros, usage_units, job_id, _RUNNING, attempt),
    ).fetchone()
    if row is None:
        return None
    return _insert_event(conn, job_id, row[0], micros, attempt, StateChanged(state, error))


def _cancel(
    conn: sqlite3.Connection, job_id: str, error: JobError, now: datetime
) -> tuple[Job, JobEvent | None] | None:
    micros = codec.time_to_micros(now)
    row = conn.execute(
        "UPDATE jobs SET state = ?, error = ?, end_time = ?, lease_expire_time = NULL,"
        " event_sequence = event_sequence + 1"
        f" WHERE id = ? AND state IN ({_marks(_CANCEL_SOURCES)}) RETURNING {JOB_COLUMNS}",
        (
            JobState.CANCELLED.value,
            _error_text(error),
            micros,
            job_id,
            *_CANCEL_SOURCES,
        ),
    ).fetchone()
    if row is None:
        unchanged = _select_job(conn, job_id)
        return None if unchanged is None else (unchanged, None)
    job = _job_from_row(row)
    event = _insert_event(
        conn,
        job_id,
        job.event_sequence,
        micros,
        job.attempt,
        StateChanged(JobState.CANCELLED, error),
    )
    return job, event


def _events(conn: sqlite3.Connection, job_id: str, after: int, limit: int) -> list[JobEvent]:
    rows = conn.execute(
        "SELECT sequence, time, attempt, payload FROM events"
        " WHERE job_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
        (job_id, after, limit),
    )
    return [
        JobEvent(
            job_id=job_id,
            sequence=sequence,
            time=codec.time_from_micros(time),
            attempt=attempt,
            payload=codec.payload_from_dict(codec.loads(payload)),
        )
        for sequence, time, attempt, payload in rows
    ]


def _unfinished(conn: sqlite3.Connection, limit: int) -> list[Job]:
    states = (JobState.QUEUED.value, _RUNNING)
    rows = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN (?, ?) ORDER BY create_time, id LIMIT ?",
        (*states, limit),
    )
    return [_job_from_row(row) for row in rows]


def _mark_published(conn: sqlite3.Connection, ids: str) -> None:
    # The ids travel as one JSON array: one statement for any number, under SQLite's bind limit.
    conn.execute(
        "UPDATE jobs SET published = 1"
        " WHERE id IN (SELECT value FROM json_each(?)) AND state = ? AND published = 0",
        (ids, _QUEUED),
    )


def _unpublished(conn: sqlite3.Connection, older_than: int, limit: int) -> list[Job]:
    rows = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = ? AND published = 0 AND create_time < ?"
        " ORDER BY create_time, id LIMIT ?",
        (_QUEUED, older_than, limit),
    )
    return [_job_from_row(row) for row in rows]


def _insert_event(
    conn: sqlite3.Connection,
    job_id: str,
    sequence: int,
    micros: int,
    attempt: int,
    payload: EventPayload,
) -> JobEvent:
    conn.execute(
        "INSERT INTO events (job_id, sequence, time, attempt, payload) VALUES (?, ?, ?, ?, ?)",
        (job_id, sequence, micros, attempt, codec.dumps(codec.payload_to_dict(payload))),
    )
    return JobEvent(
        job_id=job_id,
        sequence=sequence,
        time=codec.time_from_micros(micros),
        attempt=attempt,
        payload=payload,
    )


def _job_from_row(row: Iterable[Any]) -> Job:
    (
        job_id,
        owner,
        model,
        input_text,
        state,
        attempt,
        progress,
        outputs,
        error,
        create_time,
        start_time,
        end_time,
        event_sequence,
        request_id,
        lease_expire_time,
        provider_task,
        billed,
        usage_units,
        *_,
    ) = row
    return Job(
        id=job_id,
        owner=owner,
        model=model,
        input=codec.input_from_dict(codec.loads(input_text)),
        state=JobState(state),
        attempt=attempt,
        progress=codec.progress_from_dict(codec.loads(progress)) if progress else None,
        outputs=tuple(codec.output_from_dict(o) for o in codec.loads(outputs)),
        error=codec.error_from_dict(codec.loads(error)) if error else None,
        create_time=codec.time_from_micros(create_time),
        start_time=codec.time_from_micros(start_time) if start_time is not None else None,
        end_time=codec.time_from_micros(end_time) if end_time is not None else None,
        event_sequence=event_sequence,
        request_id=request_id,
        lease_expire_time=(
            codec.time_from_micros(lease_expire_time) if lease_expire_time is not None else None
        ),
        provider_task=(
            codec.provider_task_from_dict(codec.loads(provider_task)) if provider_task else None
        ),
        billed=bool(billed),
        usage_units=usage_units,
    )


def _error_text(error: JobError | None) -> str | None:
    return codec.dumps(codec.error_to_dict(error)) if error else None


def _marks(values: tuple[str, ...]) -> str:
    return ", ".join("?" * len(values))
