"""What only the PostgreSQL stores promise: migrations, round trips, indexes, start-up errors."""

from __future__ import annotations

import asyncio
import re
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from core.adapters.postgres import SESSION_SETTINGS, CannotOpen, load_migrations
from core.adapters.postgres_accounts import PostgresAccountStore
from core.adapters.postgres_jobs import PostgresJobStore
from core.backends import open_backends
from core.catalog import Catalog
from core.errors import ConfigError, InvalidArgument, Reason
from core.jobs import (
    JobError,
    JobEvent,
    JobInput,
    JobState,
    LogLine,
    NewJob,
    Output,
    Progress,
)
from core.ports import Claimed, JobQuery
from core.settings import Settings
from tests.fixtures.postgres import with_options

PROGRESS_UPDATES = 10
# create + claim + one per progress update + finish + get: one round trip per store call.
ROUND_TRIPS_PER_JOB = 1 + 1 + PROGRESS_UPDATES + 1 + 1


def new_job(owner: str = "alice", request_id: str | None = None) -> NewJob:
    return NewJob(
        id=uuid.uuid4().hex,
        owner=owner,
        model="local/echo",
        input=JobInput(prompt="hello"),
        create_time=datetime.now(UTC),
        request_id=request_id,
    )


async def query(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


# --- migrations ---


def test_the_migrations_ship_inside_the_package() -> None:
    jobs, accounts = load_migrations("jobs"), load_migrations("accounts")

    versions = [m.version for m in jobs]
    assert versions == sorted(set(versions)) and versions[0] == 1
    assert "CREATE TABLE jobs" in jobs[0].sql
    assert "CREATE TABLE api_keys" in accounts[0].sql


async def test_stores_starting_together_apply_each_migration_once(postgres_url: str) -> None:
    opening = [PostgresJobStore.open(postgres_url, pool_size=1) for _ in range(4)]
    opening += [PostgresAccountStore.open(postgres_url, pool_size=1) for _ in range(4)]

    stores = await asyncio.gather(*opening)
    try:
        rows = await query(
            postgres_url, "SELECT stream, version, name FROM schema_migrations ORDER BY 1, 2"
        )
        expected = [
            (m.stream, m.version, m.name) for s in ("accounts", "jobs") for m in load_migrations(s)
        ]
        assert [tuple(r) for r in rows] == expected
        job, created = await stores[0].create(new_job())  # type: ignore[union-attr]
        key = await stores[-1].create_key("alice")  # type: ignore[union-attr]
        assert created and await stores[1].get(job.id) == job  # type: ignore[union-attr]
        assert await stores[-2].authenticate(key) is not None  # type: ignore[union-attr]
    finally:
        for store in stores:
            await store.close()


async def test_each_store_creates_only_its_own_tables(postgres_url: str) -> None:
    store = await PostgresAccountStore.open(postgres_url)
    await store.close()

    rows = await query(
        postgres_url,
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1",
    )

    assert [r["tablename"] for r in rows] == [
        "api_keys",
        "holds",
        "ledger",
        "schema_migrations",
        "submit_counts",
        "tariff_prices",
        "tariffs",
        "users",
    ]


async def test_reopening_applies_nothing_again(postgres_url: str) -> None:
    for _ in range(2):
        store = await PostgresJobStore.open(postgres_url)
        await store.close()

    rows = await query(postgres_url, "SELECT count(*) AS n FROM schema_migrations")

    assert rows[0]["n"] == len(load_migrations("jobs"))


# --- round trips ---


class ProtocolTap:
    """A TCP relay to PostgreSQL that counts the client's round trips and keeps its statements.

    The client waits for the server after a Sync (extended protocol), a Flush (asyncpg prepares
    a statement that way) or a Query (simple protocol): each is one round trip. A Parse message
    carries a statement.
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.round_trips = 0
        self.statements: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self._target)
        upstream = asyncio.create_task(self._count_and_copy(client_r, server_w))
        downstream = asyncio.create_task(_copy(server_r, client_w))
        self._tasks |= {upstream, downstream}
        await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        for task in (upstream, downstream):
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()

    async def _count_and_copy(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        (length,) = struct.unpack("!i", await reader.readexactly(4))
        writer.write(struct.pack("!i", length) + await reader.readexactly(length - 4))
        while True:
            header = await reader.readexactly(5)
            kind, length = header[:1], struct.unpack("!i", header[1:])[0]
            message = header + await reader.readexactly(length - 4)
            writer.write(message)
            await writer.drain()
            if kind in (b"S", b"Q", b"H"):
                self.round_trips += 1
            if kind == b"P":
                body = message[5:]
                name_end = body.index(b"\0")
                self.statements.append(
                    body[name_end + 1 : body.index(b"\0", name_end + 1)].decode()
                )


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


@pytest.fixture
async def tap(postgres_url: str) -> AsyncIterator[tuple[ProtocolTap, str]]:
    parts = urlsplit(postgres_url)
    relay = ProtocolTap(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await relay.start()
    netloc = f"{parts.username or 'postgres'}@127.0.0.1:{port}"
    # No TLS, so the relay can read the messages.
    url = with_options(urlunsplit(parts._replace(netloc=netloc)), sslmode="disable")
    yield relay, url
    await relay.close()


async def run_one_job(store: PostgresJobStore) -> None:
    job, _ = await store.create(new_job())
    claimed = await store.claim(job.id)
    assert claimed is not None
    for i in range(PROGRESS_UPDATES):
        assert await store.record(job.id, 1, Progress((i + 1) / PROGRESS_UPDATES))
    assert await store.finish(job.id, 1, JobState.SUCCEEDED)
    assert await store.get(job.id) is not None


async def test_a_job_costs_one_round_trip_per_store_call(
    tap: tuple[ProtocolTap, str],
) -> None:
    relay, url = tap
    store = await PostgresJobStore.open(url, pool_size=1)
    try:
        await run_one_job(store)  # prepares each statement once on the connection
        before = relay.round_trips

        await run_one_job(store)

        assert relay.round_trips - before == ROUND_TRIPS_PER_JOB
    finally:
        await store.close()


# --- batches ---

CONCURRENT_JOBS = 20


async def test_calls_made_together_share_one_statement(tap: tuple[ProtocolTap, str]) -> None:
    relay, url = tap
    store = await PostgresJobStore.open(url, pool_size=1)
    try:
        jobs = [(await store.create(new_job()))[0] for _ in range(CONCURRENT_JOBS + 2)]
        warm_up, jobs = jobs[:2], jobs[2:]
        await asyncio.gather(*(store.claim(job.id) for job in warm_up))  # prepares the statement
        before = relay.round_trips

        claims = await asyncio.gather(*(store.claim(job.id) for job in jobs))
        claim_trips = relay.round_trips - before
        events = await asyncio.gather(*(store.record(j.id, 1, Progress(0.5)) for j in jobs))
        ends = await asyncio.gather(*(store.finish(j.id, 1, JobState.SUCCEEDED) for j in jobs))
        stored = [await store.get(job.id) for job in jobs]
    finally:
        await store.close()

    assert claim_trips == 1
    assert all(isinstance(c, Claimed) and c.job.attempt == 1 for c in claims)
    assert [e.sequence for e in events if e] == [3] * CONCURRENT_JOBS
    assert [e.sequence for e in ends if e] == [4] * CONCURRENT_JOBS
    assert all(j and j.state is JobState.SUCCEEDED and j.progress for j in stored)


async def test_in_a_batch_each_call_keeps_its_own_outcome(postgres_url: str) -> None:
    store = await PostgresJobStore.open(postgres_url, pool_size=1)
    try:
        jobs = [(await store.create(new_job()))[0] for _ in range(4)]
        first, *others = jobs
        # Two claims of one job (a duplicate delivery): one starts it, the other finds it held.
        claims = await asyncio.gather(
            *(store.claim(job.id, timedelta(seconds=60)) for job in [first, first, *others])
        )
        # A stale attempt's write and a write PostgreSQL refuses fail alone.
        outcomes = await asyncio.gather(
            store.record(first.id, 1, LogLine("kept")),
            store.record(others[0].id, 2, LogLine("stale attempt")),
            store.record(others[1].id, 1, Output("o", text="a\0b")),
            store.record(others[2].id, 1, LogLine("kept too")),
            return_exceptions=True,
        )
    finally:
        await store.close()

    assert sorted(type(c).__name__ for c in claims[:2]) == ["Claimed", "Held"]
    assert all(isinstance(c, Claimed) for c in claims[2:])
    kept, stale, refused, kept_too = outcomes
    assert isinstance(kept, JobEvent) and isinstance(kept_too, JobEvent)
    assert stale is None
    assert isinstance(refused, InvalidArgument)


async def test_noting_a_job_published_after_it_started_rewrites_no_row(postgres_url: str) -> None:
    store = await PostgresJobStore.open(postgres_url)
    try:
        started, _ = await store.create(new_job())
        queued, _ = await store.create(new_job())
        await store.claim(started.id)
        before = await row_versions(postgres_url, started.id, queued.id)
        await store.mark_published([started.id, queued.id])
        after = await row_versions(postgres_url, started.id, queued.id)
    finally:
        await store.close()

    # Every update of a job rewrites its indexes; most jobs start before the note is written.
    assert after[started.id] == before[started.id]
    assert after[queued.id] != before[queued.id]


async def row_versions(url: str, *job_ids: str) -> dict[str, str]:
    ids = ", ".join(f"'{job_id}'" for job_id in job_ids)
    rows = await query(url, f"SELECT id, xmin::text AS version FROM jobs WHERE id IN ({ids})")
    return {row["id"]: row["version"] for row in rows}


# --- indexes ---


async def make_every_kind_of_call(store: PostgresJobStore) -> None:
    job, _ = await store.create(new_job(request_id="r"))
    await store.create(new_job(request_id="r"))
    await asyncio.gather(store.create(new_job()), store.create(new_job()))  # a batch
    await store.claim(job.id, timedelta(seconds=60))
    await store.claim(job.id, timedelta(seconds=60))  # held: the read that tells why
    await store.heartbeat(job.id, 1, timedelta(seconds=60))
    for payload in (Progress(0.5), Output("o", text="x"), LogLine("x")):
        await store.record(job.id, 1, payload)
        await asyncio.gather(*(store.record(job.id, n, payload) for n in (1, 2)))  # a batch
    await asyncio.gather(*(store.claim(j.id) for j in [job, job]))  # a batch, none claimable
    await store.finish(job.id, 1, JobState.SUCCEEDED)
    await asyncio.gather(*(store.finish(job.id, n, JobState.FAILED) for n in (1, 2)))  # a batch
    await store.cancel(job.id, JobError(Reason.CANCELLED, "late"))
    other, _ = await store.create(new_job())
    await store.cancel(other.id, JobError(Reason.CANCELLED, "stop"))
    await store.get(job.id)
    await asyncio.gather(store.get(job.id), store.get(other.id))  # a batch
    await store.events(job.id, after=1)
    await store.jobs_ahead(job)
    await asyncio.gather(store.jobs_ahead(job), store.jobs_ahead(other))  # a batch
    await store.unfinished()
    await store.unpublished(datetime.now(UTC), 100)
    await store.mark_published([job.id, other.id])
    for state in (None, JobState.QUEUED):
        for model in (None, "local/echo"):
            for before in (None, (job.create_time, job.id)):
                await store.list(JobQuery("alice", 10, state, model, before))


# Many owners and models, mostly finished, like a database that has served for a while.
FILL = """
INSERT INTO jobs (id, owner, model, input, state, create_time, event_sequence, fingerprint)
SELECT 'fill-' || n, 'owner-' || (n % 500), 'model-' || (n % 20), '{}',
       CASE WHEN n % 50 = 0 THEN 'QUEUED' ELSE 'SUCCEEDED' END,
       now() - n * interval '1 second', 2, ''
FROM generate_series(1, 30000) AS n;
INSERT INTO job_events (job_id, sequence, time, attempt, payload)
SELECT id, s, create_time, 0, '{}' FROM jobs, generate_series(1, 2) AS s WHERE id LIKE 'fill-%';
ANALYZE jobs;
ANALYZE job_events;
"""


async def statements_of_every_call(tap: tuple[ProtocolTap, str]) -> set[str]:
    """The statements a store sends for every kind of call, on a table of a handful of rows."""
    relay, url = tap
    store = await PostgresJobStore.open(url, pool_size=1)
    try:
        relay.statements.clear()
        await make_every_kind_of_call(store)
    finally:
        await store.close()
    # asyncpg's own catalog query (type introspection, once per connection) is not ours.
    return {sql for sql in relay.statements if "typeinfo_tree" not in sql}


async def test_every_query_the_api_makes_is_served_by_an_index(
    tap: tuple[ProtocolTap, str], postgres_url: str
) -> None:
    statements = await statements_of_every_call(tap)
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(FILL)
        # Plans for any parameter values, as the pool's cached statements end up using.
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        plans = {sql: await _generic_plan(conn, sql) for sql in statements}
    finally:
        await conn.close()

    assert len(plans) >= 10
    assert {sql: plan for sql, plan in plans.items() if "Seq Scan" in plan} == {}


# A statement that finds jobs by id: a claim, record, finish, heartbeat, cancel, get, the outbox.
BY_ID = re.compile(r"\b(jobs\.)?id = (\$\d|ANY|i\.id)")


async def test_writes_by_id_planned_while_the_table_is_empty_still_find_jobs_by_key(
    tap: tuple[ProtocolTap, str], postgres_url: str
) -> None:
    by_id = [sql for sql in await statements_of_every_call(tap) if BY_ID.search(sql)]
    conn = await asyncpg.connect(postgres_url, server_settings=SESSION_SETTINGS)
    try:
        # The plan a statement keeps once PostgreSQL plans it for all values, made while the
        # table holds a handful of rows never analyzed, as in a new deployment: it would be kept
        # as the table grows.
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        plans = {sql: await _generic_plan(conn, sql) for sql in by_id}
    finally:
        await conn.close()

    assert len(plans) >= 10
    assert {sql: plan for sql, plan in plans.items() if "jobs_pkey" not in plan} == {}


async def _generic_plan(conn: asyncpg.Connection, sql: str) -> str:
    parameters = len(set(re.findall(r"\$(\d+)", sql)))
    await conn.execute(f"PREPARE statement AS {sql}")
    try:
        nulls = ", ".join(["NULL"] * parameters)
        rows = await conn.fetch(f"EXPLAIN EXECUTE statement{f'({nulls})' if nulls else ''}")
    finally:
        await conn.execute("DEALLOCATE statement")
    return "\n".join(row[0] for row in rows)


# --- configuration ---


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://postgres@127.0.0.1:1/x", "cannot reach PostgreSQL within 5 s"),
        ("postgresql://postgres@127.0.0.1:notaport/x", "malformed PostgreSQL URL"),
        ("postgresql://postgres@127.0.0.1:5432/jobgate_no_such_db", "PostgreSQL refused"),
        ("postgres://postgres@127.0.0.1/x?sslmode=bogus", "malformed PostgreSQL URL"),
    ],
)
@pytest.mark.parametrize("setting", ["job_store_url", "account_store_url"])
async def test_an_unusable_postgres_url_fails_start_up_with_one_line(
    tmp_path: Path, setting: str, url: str, problem: str
) -> None:
    settings = replace(
        Settings(data_dir=tmp_path, blob_http_listen="127.0.0.1:0"), **{setting: url}
    )

    with pytest.raises(ConfigError) as raised:
        await open_backends(settings, Catalog([]), serves_api=False)

    message = str(raised.value)
    assert message.startswith(f"JOBGATE_{setting.upper()}={url!r}: {problem}")
    assert "\n" not in message


async def test_postgres_urls_open_both_stores_in_one_database(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        job_store_url=postgres_url,
        account_store_url=postgres_url.replace("postgresql://", "postgres://", 1),
        blob_http_listen="127.0.0.1:0",
    )

    backends = await open_backends(settings, Catalog([]), serves_api=False)
    try:
        key = await backends.accounts.create_key("alice")
        job, _ = await backends.jobs.create(new_job())
    finally:
        await backends.close()

    assert isinstance(backends.jobs, PostgresJobStore)
    reopened = await PostgresAccountStore.open(postgres_url)
    try:
        assert await reopened.authenticate(key) is not None
    finally:
        await reopened.close()
    assert not (tmp_path / "jobs.db").exists()
    assert job.owner == "alice"


async def test_a_failing_migration_names_itself_and_leaves_nothing_half_done(
    postgres_url: str,
) -> None:
    await query(postgres_url, "CREATE TABLE jobs (id int)")

    with pytest.raises(CannotOpen, match=r"migration jobs/0001_create_jobs failed: .*jobs"):
        await PostgresJobStore.open(postgres_url)

    tables = await query(
        postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    )
    assert [t["tablename"] for t in tables] == ["jobs"]


# --- what PostgreSQL cannot store ---


async def test_a_nul_character_is_refused_as_a_bad_argument(postgres_url: str) -> None:
    store = await PostgresJobStore.open(postgres_url)
    try:
        with pytest.raises(InvalidArgument, match="NUL"):
            await store.create(replace(new_job(), input=JobInput(prompt="a\0b")))
        job, _ = await store.create(new_job())
        await store.claim(job.id)
        with pytest.raises(InvalidArgument, match="NUL"):
            await store.record(job.id, 1, Output("o", text="a\0b"))
        after = await store.get(job.id)
    finally:
        await store.close()

    assert after is not None
    assert (after.outputs, after.event_sequence) == ((), 2)
