"""The JobStore on PostgreSQL: jobs and their numbered events, every change one statement.

Each state change is one conditional UPDATE (legal source states, and the attempt where the port
fences by attempt) that bumps `event_sequence`, chained in a CTE to the INSERT of the event under
that sequence. One statement is one transaction and one round trip: an event exists exactly when
its change happened, and the row lock the UPDATE takes keeps concurrent writers' sequences gapless.
Under READ COMMITTED a writer that waited for that lock re-checks its WHERE on the newest row, so a
stale attempt or a finished job matches nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from core.adapters import codec
from core.adapters.postgres import DEFAULT_POOL_SIZE, close_pool, open_pool
from core.errors import AlreadyExists, InvalidArgument
from core.jobs import (
    Job,
    JobError,
    JobEvent,
    JobState,
    LogLine,
    NewJob,
    Output,
    Progress,
    StateChanged,
    lease_end,
    sources_of,
)
from core.ports import Claimed, Held, JobQuery

MIGRATIONS = "jobs"

JOB_COLUMNS = (
    "id, owner, model, input, state, attempt, progress, outputs, error,"
    " create_time, start_time, end_time, event_sequence, request_id, lease_expire_time,"
    " billed, usage_units"
)


def _states(states: frozenset[JobState]) -> str:
    # States are written into the SQL, not bound, so the planner can match the partial indexes.
    return ", ".join(f"'{s.value}'" for s in sorted(states))


_QUEUED = f"'{JobState.QUEUED.value}'"
_RUNNING = f"'{JobState.RUNNING.value}'"
_UNFINISHED = _states(frozenset({JobState.QUEUED, JobState.RUNNING}))

# Every write ends in this: append the event of the row the `job` CTE changed, if it changed one.
_INSERT_EVENT = """, event AS (
    INSERT INTO job_events (job_id, sequence, time, attempt, payload)
    SELECT id, event_sequence, {time}, attempt, {payload}::jsonb FROM job
)"""

_CREATE = (
    f"""WITH job AS (
    INSERT INTO jobs (id, owner, model, input, state, create_time, event_sequence, request_id,
                      fingerprint, billed)
    VALUES ($1, $2, $3, $4::jsonb, {_QUEUED}, $5, 1, $6, $7, $9)
    ON CONFLICT (owner, request_id) DO NOTHING
    RETURNING id, create_time, 1 AS event_sequence, 0 AS attempt
)"""
    + _INSERT_EVENT.format(time="create_time", payload="$8")
    + " SELECT count(*) FROM job"
)

_SELECT_BY_REQUEST = (
    f"SELECT {JOB_COLUMNS}, fingerprint FROM jobs WHERE owner = $1 AND request_id = $2"
)

# Queued, or running on a lease that has run out (or, from before leases, none at all).
_CLAIM = (
    f"""WITH job AS (
    UPDATE jobs SET state = {_RUNNING}, attempt = attempt + 1, progress = NULL, outputs = '[]',
        start_time = $2, lease_expire_time = $4, event_sequence = event_sequence + 1
    WHERE id = $1 AND (state = {_QUEUED}
        OR (state = {_RUNNING} AND (lease_expire_time IS NULL OR lease_expire_time <= $2)))
    RETURNING {JOB_COLUMNS}
)"""
    + _INSERT_EVENT.format(time="$2", payload="$3")
    + f" SELECT {JOB_COLUMNS} FROM job"
)

_HEARTBEAT = (
    f"UPDATE jobs SET lease_expire_time = $3 WHERE id = $1 AND state = {_RUNNING}"
    " AND attempt = $2 RETURNING true"
)

# The job's new progress or output is the event payload without its `kind` tag.
_RECORD_CHANGES = {
    Progress: "progress = $4::jsonb - 'kind',",
    Output: "outputs = outputs || jsonb_build_array($4::jsonb - 'kind'),",
    LogLine: "",
}
_RECORD = {
    kind: f"""WITH job AS (
    UPDATE jobs SET {change} event_sequence = event_sequence + 1
    WHERE id = $1 AND state = {_RUNNING} AND attempt = $2
    RETURNING id, event_sequence, attempt
)"""
    + _INSERT_EVENT.format(time="$3", payload="$4")
    + " SELECT event_sequence FROM job"
    for kind, change in _RECORD_CHANGES.items()
}

_FINISH = (
    f"""WITH job AS (
    UPDATE jobs SET state = $3, error = $4::jsonb, end_time = $5, lease_expire_time = NULL,
        usage_units = $7, event_sequence = event_sequence + 1
    WHERE id = $1 AND state = {_RUNNING} AND attempt = $2
    RETURNING id, event_sequence, attempt
)"""
    + _INSERT_EVENT.format(time="$5", payload="$6")
    + " SELECT event_sequence FROM job"
)

_CANCEL = (
    f"""WITH job AS (
    UPDATE jobs SET state = '{JobState.CANCELLED.value}', error = $2::jsonb, end_time = $3,
        lease_expire_time = NULL, event_sequence = event_sequence + 1
    WHERE id = $1 AND state IN ({_states(sources_of(JobState.CANCELLED))})
    RETURNING {JOB_COLUMNS}
)"""
    + _INSERT_EVENT.format(time="$3", payload="$4")
    + f" SELECT {JOB_COLUMNS} FROM job"
)

_SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"

_JOBS_AHEAD = (
    f"SELECT count(*) FROM jobs WHERE state = {_QUEUED} AND model = $1"
    " AND (create_time, id) < ($2, $3)"
)

_EVENTS = (
    "SELECT sequence, time, attempt, payload FROM job_events"
    " WHERE job_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
)

_UNFINISHED_JOBS = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ({_UNFINISHED})"
    " ORDER BY create_time, id LIMIT $1"
)

_MARK_PUBLISHED = "UPDATE jobs SET published = true WHERE id = ANY($1::text[]) AND NOT published"

_UNPUBLISHED_JOBS = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = {_QUEUED} AND NOT published"
    " AND create_time < $1 ORDER BY create_time, id LIMIT $2"
)


class PostgresJobStore:
    """Jobs and events in PostgreSQL; see core.ports.JobStore for the semantics."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> PostgresJobStore:
        """Connects and applies the jobs migrations; raises postgres.CannotOpen if it cannot."""
        return cls(await open_pool(dsn, MIGRATIONS, pool_size=pool_size))

    async def close(self) -> None:
        await close_pool(self._pool)

    async def create(self, job: NewJob) -> tuple[Job, bool]:
        fingerprint = job.fingerprint()
        create_time = codec.utc(job.create_time)
        with _text_storable("job.input"):
            inserted = await self._pool.fetchval(
                _CREATE,
                job.id,
                job.owner,
                job.model,
                codec.dumps(codec.input_to_dict(job.input)),
                create_time,
                job.request_id,
                fingerprint,
                _payload(StateChanged(JobState.QUEUED)),
                job.billed,
            )
        if inserted:
            created = Job(
                id=job.id,
                owner=job.owner,
                model=job.model,
                input=job.input,
                state=JobState.QUEUED,
                create_time=create_time,
                event_sequence=1,
                request_id=job.request_id,
                billed=job.billed,
            )
            return created, True
        # A new statement, so a new snapshot: it sees the duplicate that ON CONFLICT waited for.
        row = await self._pool.fetchrow(_SELECT_BY_REQUEST, job.owner, job.request_id)
        assert row is not None, "a conflicting job is never deleted"
        if row["fingerprint"] != fingerprint:
            raise AlreadyExists(
                f"request_id {job.request_id!r} was already used for a different request"
            )
        return _job_from_row(row), False

    async def get(self, job_id: str) -> Job | None:
        row = await self._pool.fetchrow(_SELECT_JOB, job_id)
        return _job_from_row(row) if row else None

    async def list(self, query: JobQuery) -> list[Job]:
        where = ["owner = $1"]
        params: list[Any] = [query.owner]
        if query.state is not None:
            params.append(query.state.value)
            where.append(f"state = ${len(params)}")
        if query.model is not None:
            params.append(query.model)
            where.append(f"model = ${len(params)}")
        if query.before is not None:
            before_time, before_id = query.before
            params += [codec.utc(before_time), before_id]
            where.append(f"(create_time, id) < (${len(params) - 1}, ${len(params)})")
        params.append(query.limit)
        rows = await self._pool.fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)}"
            f" ORDER BY create_time DESC, id DESC LIMIT ${len(params)}",
            *params,
        )
        return [_job_from_row(row) for row in rows]

    async def jobs_ahead(self, job: Job) -> int:
        count = await self._pool.fetchval(
            _JOBS_AHEAD, job.model, codec.utc(job.create_time), job.id
        )
        return int(count)

    async def claim(self, job_id: str, lease: timedelta = timedelta(0)) -> Claimed | Held | None:
        now = _now()
        until = lease_end(now, lease)
        payload = StateChanged(JobState.RUNNING)
        row = await self._pool.fetchrow(_CLAIM, job_id, now, _payload(payload), until)
        if row is None:
            # A new statement: it sees the lease (or the end) that made the claim fail.
            found = await self.get(job_id)
            if found is None or found.state.terminal:
                return None
            return Held(found, found.lease_expire_time or now)
        job = _job_from_row(row)
        return Claimed(job, JobEvent(job_id, job.event_sequence, now, job.attempt, payload))

    async def heartbeat(self, job_id: str, attempt: int, lease: timedelta) -> bool:
        until = lease_end(_now(), lease)
        return bool(await self._pool.fetchval(_HEARTBEAT, job_id, attempt, until))

    async def record(
        self, job_id: str, attempt: int, payload: Progress | LogLine | Output
    ) -> JobEvent | None:
        statement = _RECORD.get(type(payload))
        if statement is None:
            raise TypeError(f"record() takes Progress, LogLine or Output, not {payload!r}")
        now = _now()
        with _text_storable("payload"):
            sequence = await self._pool.fetchval(statement, job_id, attempt, now, _payload(payload))
        if sequence is None:
            return None
        return JobEvent(job_id, sequence, now, attempt, payload)

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
        payload = StateChanged(state, error)
        sequence = await self._pool.fetchval(
            _FINISH,
            job_id,
            attempt,
            state.value,
            _error(error),
            now,
            _payload(payload),
            usage_units,
        )
        if sequence is None:
            return None
        return JobEvent(job_id, sequence, now, attempt, payload)

    async def cancel(self, job_id: str, error: JobError) -> tuple[Job, JobEvent | None] | None:
        now = _now()
        payload = StateChanged(JobState.CANCELLED, error)
        row = await self._pool.fetchrow(_CANCEL, job_id, _error(error), now, _payload(payload))
        if row is None:
            # Missing or terminal; a terminal job never changes, so this read is its final state.
            unchanged = await self.get(job_id)
            return None if unchanged is None else (unchanged, None)
        job = _job_from_row(row)
        return job, JobEvent(job_id, job.event_sequence, now, job.attempt, payload)

    async def events(self, job_id: str, after: int, limit: int = 1000) -> list[JobEvent]:
        rows = await self._pool.fetch(_EVENTS, job_id, after, limit)
        return [
            JobEvent(
                job_id=job_id,
                sequence=row["sequence"],
                time=row["time"],
                attempt=row["attempt"],
                payload=codec.payload_from_dict(codec.loads(row["payload"])),
            )
            for row in rows
        ]

    async def unfinished(self, limit: int = 1000) -> list[Job]:
        rows = await self._pool.fetch(_UNFINISHED_JOBS, limit)
        return [_job_from_row(row) for row in rows]

    async def mark_published(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            await self._pool.execute(_MARK_PUBLISHED, list(job_ids))

    async def unpublished(self, older_than: datetime, limit: int) -> list[Job]:
        rows = await self._pool.fetch(_UNPUBLISHED_JOBS, codec.utc(older_than), limit)
        return [_job_from_row(row) for row in rows]


@contextmanager
def _text_storable(field: str) -> Iterator[None]:
    """Turns PostgreSQL's refusal of a NUL character into the caller's error, not an internal one.

    Text and JSONB cannot hold U+0000, which the other stores accept; refusing it is the one
    difference left.
    """
    try:
        yield
    except (asyncpg.UntranslatableCharacterError, asyncpg.CharacterNotInRepertoireError) as exc:
        raise InvalidArgument(
            field, f"{field} holds a character PostgreSQL cannot store (NUL, U+0000): {exc}"
        ) from exc


def _now() -> datetime:
    return datetime.now(UTC)


def _payload(payload: StateChanged | Progress | LogLine | Output) -> str:
    return codec.dumps(codec.payload_to_dict(payload))


def _error(error: JobError | None) -> str | None:
    return codec.dumps(codec.error_to_dict(error)) if error else None


def _job_from_row(row: Mapping[str, Any]) -> Job:
    progress, error = row["progress"], row["error"]
    return Job(
        id=row["id"],
        owner=row["owner"],
        model=row["model"],
        input=codec.input_from_dict(codec.loads(row["input"])),
        state=JobState(row["state"]),
        attempt=row["attempt"],
        progress=codec.progress_from_dict(codec.loads(progress)) if progress else None,
        outputs=tuple(codec.output_from_dict(o) for o in codec.loads(row["outputs"])),
        error=codec.error_from_dict(codec.loads(error)) if error else None,
        create_time=row["create_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        event_sequence=row["event_sequence"],
        request_id=row["request_id"],
        lease_expire_time=row["lease_expire_time"],
        billed=row["billed"],
        usage_units=row["usage_units"],
    )
