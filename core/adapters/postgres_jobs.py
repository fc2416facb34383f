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
from functools import partial
from typing import Any, NamedTuple

import asyncpg

from core.adapters import codec
from core.adapters.batching import Batcher
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
    ProviderTask,
    StateChanged,
    lease_end,
    sources_of,
)
from core.ports import Claimed, Held, JobQuery

MIGRATIONS = "jobs"

JOB_COLUMNS = (
    "id, owner, model, input, state, attempt, progress, outputs, error,"
    " create_time, start_time, end_time, event_sequence, request_id, lease_expire_time,"
    " provider_task, billed, usage_units"
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
    VALUES ($1, $2, $3, $4::jsonb, {_QUEUED}, $5, 1, $6, $7, $8)
    ON CONFLICT (owner, request_id) DO NOTHING
    RETURNING id, create_time, 1 AS event_sequence, 0 AS attempt
)"""
    + _INSERT_EVENT.format(time="create_time", payload="$9")
    + " SELECT count(*) FROM job"
)

_CREATE_BATCH = (
    f"""WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
        $6::text[], $7::text[], $8::bool[])
        AS i(id, owner, model, input, create_time, request_id, fingerprint, billed)
), job AS (
    INSERT INTO jobs (id, owner, model, input, state, create_time, event_sequence, request_id,
                      fingerprint, billed)
    SELECT id, owner, model, input::jsonb, {_QUEUED}, create_time, 1, request_id, fingerprint,
        billed
    FROM input
    ON CONFLICT (owner, request_id) DO NOTHING
    RETURNING id, create_time, 1 AS event_sequence, 0 AS attempt
)"""
    + _INSERT_EVENT.format(time="create_time", payload="$9")
    + " SELECT id FROM job"
)

_SELECT_BY_REQUEST = (
    f"SELECT {JOB_COLUMNS}, fingerprint FROM jobs WHERE owner = $1 AND request_id = $2"
)

# Queued, or running on a lease that has run out (or, from before leases, none at all).
_CLAIM = (
    f"""WITH job AS (
    UPDATE jobs SET state = {_RUNNING}, attempt = attempt + 1, progress = NULL, outputs = '[]',
        start_time = $2, lease_expire_time = $4, event_sequence = event_sequence + 1,
        published = true
    WHERE id = $1 AND (state = {_QUEUED}
        OR (state = {_RUNNING} AND (lease_expire_time IS NULL OR lease_expire_time <= $2)))
    RETURNING {JOB_COLUMNS}
)"""
    + _INSERT_EVENT.format(time="$2", payload="$3")
    + f" SELECT {JOB_COLUMNS} FROM job"
)

# The batch forms of the hot writes (see core.adapters.batching): one statement for many jobs,
# each with its own arguments, joined to the rows they change by id.
_JOB_COLUMNS_OF_JOBS = ", ".join(f"jobs.{c.strip()}" for c in JOB_COLUMNS.split(","))

_CLAIM_BATCH = (
    f"""WITH input AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])
        AS i(id, now, until)
), job AS (
    UPDATE jobs SET state = {_RUNNING}, attempt = jobs.attempt + 1, progress = NULL,
        outputs = '[]', start_time = i.now, lease_expire_time = i.until,
        event_sequence = jobs.event_sequence + 1, published = true
    FROM input i
    WHERE jobs.id = i.id AND (jobs.state = {_QUEUED} OR (jobs.state = {_RUNNING}
        AND (jobs.lease_expire_time IS NULL OR jobs.lease_expire_time <= i.now)))
    RETURNING {_JOB_COLUMNS_OF_JOBS}, i.now
)"""
    + _INSERT_EVENT.format(time="now", payload="$4")
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

_RECORD_BATCH_CHANGES = {
    Progress: "progress = i.payload::jsonb - 'kind',",
    Output: "outputs = jobs.outputs || jsonb_build_array(i.payload::jsonb - 'kind'),",
    LogLine: "",
}
_RECORD_BATCH = {
    kind: f"""WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::text[])
        AS i(id, attempt, now, payload)
), job AS (
    UPDATE jobs SET {change} event_sequence = jobs.event_sequence + 1
    FROM input i
    WHERE jobs.id = i.id AND jobs.state = {_RUNNING} AND jobs.attempt = i.attempt
    RETURNING jobs.id, jobs.event_sequence, jobs.attempt, i.now, i.payload
)"""
    + _INSERT_EVENT.format(time="now", payload="payload")
    + " SELECT id, event_sequence FROM job"
    for kind, change in _RECORD_BATCH_CHANGES.items()
}

_SET_PROVIDER_TASK = (
    f"UPDATE jobs SET provider_task = $3::jsonb WHERE id = $1 AND state = {_RUNNING}"
    " AND attempt = $2 RETURNING true"
)

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

_FINISH_BATCH = (
    f"""WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::timestamptz[],
        $6::text[], $7::bigint[]) AS i(id, attempt, state, error, now, payload, usage_units)
), job AS (
    UPDATE jobs SET state = i.state, error = i.error::jsonb, end_time = i.now,
        lease_expire_time = NULL, usage_units = i.usage_units,
        event_sequence = jobs.event_sequence + 1
    FROM input i
    WHERE jobs.id = i.id AND jobs.state = {_RUNNING} AND jobs.attempt = i.attempt
    RETURNING jobs.id, jobs.event_sequence, jobs.attempt, i.now, i.payload
)"""
    + _INSERT_EVENT.format(time="now", payload="payload")
    + " SELECT id, event_sequence FROM job"
)

_CANCEL = (
    f"""WITH job AS (
    UPDATE jobs SET state = '{JobState.CANCELLED.value}', error = $2::jsonb, end_time = $3,
        lease_expire_time = NULL, event_sequence = event_sequence + 1, published = true
    WHERE id = $1 AND state IN ({_states(sources_of(JobState.CANCELLED))})
    RETURNING {JOB_COLUMNS}
)"""
    + _INSERT_EVENT.format(time="$3", payload="$4")
    + f" SELECT {JOB_COLUMNS} FROM job"
)

_SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
_SELECT_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1::text[])"

_JOBS_AHEAD = (
    f"SELECT count(*) FROM jobs WHERE state = {_QUEUED} AND model = $1"
    " AND (create_time, id) < ($2, $3)"
)
_JOBS_AHEAD_BATCH = f"""SELECT i.id, (
    SELECT count(*) FROM jobs WHERE state = {_QUEUED} AND model = i.model
        AND (create_time, id) < (i.create_time, i.id)
) AS ahead
FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS i(model, create_time, id)"""

_EVENTS = (
    "SELECT sequence, time, attempt, payload FROM job_events"
    " WHERE job_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
)

# end_time IS NULL selects the index (jobs/0005); the states say what unfinished means.
_UNFINISHED_JOBS = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE end_time IS NULL AND state IN ({_UNFINISHED})"
    " ORDER BY create_time, id LIMIT $1"
)

# Claims and cancels set `published` too (they rewrite the row anyway), so noting the jobs that
# started before the flush writes nothing. The WHERE names no state: a partial index over the
# queue would then serve it, and a plan cached while the table was empty would scan the queue.
_MARK_PUBLISHED = "UPDATE jobs SET published = true WHERE id = ANY($1::text[]) AND NOT published"

_UNPUBLISHED_JOBS = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = {_QUEUED} AND NOT published"
    " AND create_time < $1 ORDER BY create_time, id LIMIT $2"
)


class _Claim(NamedTuple):
    job_id: str
    now: datetime
    until: datetime | None


class _Record(NamedTuple):
    job_id: str
    attempt: int
    now: datetime
    payload: str


class _Finish(NamedTuple):
    job_id: str
    attempt: int
    state: str
    error: str | None
    now: datetime
    payload: str
    usage_units: int


class _Create(NamedTuple):
    job_id: str
    owner: str
    model: str
    input: str
    create_time: datetime
    request_id: str | None
    fingerprint: str
    billed: bool

    def key(self) -> tuple[str, str]:
        """Two creates with one request_id never share a statement, as two writes of one job."""
        return (self.owner, self.request_id) if self.request_id else ("", self.job_id)


class _Ahead(NamedTuple):
    model: str
    create_time: datetime
    job_id: str


_QUEUED_PAYLOAD = codec.dumps(codec.payload_to_dict(StateChanged(JobState.QUEUED)))
_CLAIM_PAYLOAD = codec.dumps(codec.payload_to_dict(StateChanged(JobState.RUNNING)))


def _by_job(calls: Sequence[_Claim | _Record | _Finish], rows: Sequence[Any]) -> list[Any]:
    """Each call's row of a batch statement, or None where its job did not change."""
    found = {row["id"]: row for row in rows}
    return [found.get(call.job_id) for call in calls]


class PostgresJobStore:
    """Jobs and events in PostgreSQL; see core.ports.JobStore for the semantics.

    The calls every job makes (create, claim, record, finish, and a watch's get and queue count) go
    through batchers: made at the same time, they share one statement (core.adapters.batching)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._creates = Batcher(_Create.key, self._create_batch, self._create_one)
        self._claims = Batcher(_job_of, self._claim_batch, self._claim_one)
        self._records = {
            kind: Batcher(
                _job_of, partial(self._record_batch, kind), partial(self._record_one, kind)
            )
            for kind in _RECORD
        }
        self._finishes = Batcher(_job_of, self._finish_batch, self._finish_one)
        self._gets = Batcher(str, self._get_batch, self._get_one)
        self._counts = Batcher(_job_of, self._ahead_batch, self._ahead_one)

    @classmethod
    async def open(cls, dsn: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> PostgresJobStore:
        """Connects and applies the jobs migrations; raises postgres.CannotOpen if it cannot."""
        return cls(await open_pool(dsn, MIGRATIONS, pool_size=pool_size))

    async def close(self) -> None:
        await close_pool(self._pool)

    async def create(self, job: NewJob) -> tuple[Job, bool]:
        fingerprint = job.fingerprint()
        create_time = codec.utc(job.create_time)
        call = _Create(
            job.id,
            job.owner,
            job.model,
            codec.dumps(codec.input_to_dict(job.input)),
            create_time,
            job.request_id,
            fingerprint,
            job.billed,
        )
        with _text_storable("job.input"):
            inserted = await self._creates(call)
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

    async def _create_one(self, call: _Create) -> bool:
        return bool(await self._pool.fetchval(_CREATE, *call, _QUEUED_PAYLOAD))

    async def _create_batch(self, calls: Sequence[_Create]) -> list[bool]:
        rows = await self._pool.fetch(_CREATE_BATCH, *zip(*calls, strict=True), _QUEUED_PAYLOAD)
        created = {row["id"] for row in rows}
        return [call.job_id in created for call in calls]

    async def get(self, job_id: str) -> Job | None:
        row = await self._gets(job_id)
        return _job_from_row(row) if row else None

    async def _get_one(self, job_id: str) -> Any:
        return await self._pool.fetchrow(_SELECT_JOB, job_id)

    async def _get_batch(self, job_ids: Sequence[str]) -> list[Any]:
        found = {row["id"]: row for row in await self._pool.fetch(_SELECT_JOBS, job_ids)}
        return [found.get(job_id) for job_id in job_ids]

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
        return await self._counts(_Ahead(job.model, codec.utc(job.create_time), job.id))

    async def _ahead_one(self, call: _Ahead) -> int:
        return int(await self._pool.fetchval(_JOBS_AHEAD, *call))

    async def _ahead_batch(self, calls: Sequence[_Ahead]) -> list[int]:
        rows = await self._pool.fetch(_JOBS_AHEAD_BATCH, *zip(*calls, strict=True))
        counts = {row["id"]: int(row["ahead"]) for row in rows}
        return [counts[call.job_id] for call in calls]

    async def claim(self, job_id: str, lease: timedelta = timedelta(0)) -> Claimed | Held | None:
        now = _now()
        row = await self._claims(_Claim(job_id, now, lease_end(now, lease)))
        if row is None:
            # A new statement: it sees the lease (or the end) that made the claim fail.
            found = await self.get(job_id)
            if found is None or found.state.terminal:
                return None
            return Held(found, found.lease_expire_time or now)
        job = _job_from_row(row)
        payload = StateChanged(JobState.RUNNING)
        return Claimed(job, JobEvent(job_id, job.event_sequence, now, job.attempt, payload))

    async def _claim_one(self, call: _Claim) -> Any:
        return await self._pool.fetchrow(_CLAIM, call.job_id, call.now, _CLAIM_PAYLOAD, call.until)

    async def _claim_batch(self, calls: Sequence[_Claim]) -> list[Any]:
        ids, nows, untils = zip(*calls, strict=True)
        rows = await self._pool.fetch(_CLAIM_BATCH, ids, nows, untils, _CLAIM_PAYLOAD)
        return _by_job(calls, rows)

    async def heartbeat(self, job_id: str, attempt: int, lease: timedelta) -> bool:
        until = lease_end(_now(), lease)
        return bool(await self._pool.fetchval(_HEARTBEAT, job_id, attempt, until))

    async def record(
        self, job_id: str, attempt: int, payload: Progress | LogLine | Output
    ) -> JobEvent | None:
        batcher = self._records.get(type(payload))
        if batcher is None:
            raise TypeError(f"record() takes Progress, LogLine or Output, not {payload!r}")
        now = _now()
        with _text_storable("payload"):
            sequence = await batcher(_Record(job_id, attempt, now, _payload(payload)))
        if sequence is None:
            return None
        return JobEvent(job_id, sequence, now, attempt, payload)

    async def _record_one(self, kind: type, call: _Record) -> int | None:
        return await self._pool.fetchval(_RECORD[kind], *call)

    async def _record_batch(self, kind: type, calls: Sequence[_Record]) -> list[int | None]:
        rows = await self._pool.fetch(_RECORD_BATCH[kind], *zip(*calls, strict=True))
        return [row and row["event_sequence"] for row in _by_job(calls, rows)]

    async def set_provider_task(self, job_id: str, attempt: int, task: ProviderTask) -> bool:
        text = codec.dumps(codec.provider_task_to_dict(task))
        with _text_storable("provider_task"):
            return bool(await self._pool.fetchval(_SET_PROVIDER_TASK, job_id, attempt, text))

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
        call = _Finish(
            job_id, attempt, state.value, _error(error), now, _payload(payload), usage_units
        )
        sequence = await self._finishes(call)
        if sequence is None:
            return None
        return JobEvent(job_id, sequence, now, attempt, payload)

    async def _finish_one(self, call: _Finish) -> int | None:
        return await self._pool.fetchval(_FINISH, *call)

    async def _finish_batch(self, calls: Sequence[_Finish]) -> list[int | None]:
        rows = await self._pool.fetch(_FINISH_BATCH, *zip(*calls, strict=True))
        return [row and row["event_sequence"] for row in _by_job(calls, rows)]

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


def _job_of(call: _Claim | _Record | _Finish | _Ahead) -> str:
    return call.job_id


def _now() -> datetime:
    return datetime.now(UTC)


def _payload(payload: StateChanged | Progress | LogLine | Output) -> str:
    return codec.dumps(codec.payload_to_dict(payload))


def _error(error: JobError | None) -> str | None:
    return codec.dumps(codec.error_to_dict(error)) if error else None


def _job_from_row(row: Mapping[str, Any]) -> Job:
    progress, error, task = row["progress"], row["error"], row["provider_task"]
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
        provider_task=codec.provider_task_from_dict(codec.loads(task)) if task else None,
        billed=row["billed"],
        usage_units=row["usage_units"],
    )
