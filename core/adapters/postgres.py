"""PostgreSQL plumbing shared by the stores: a connection pool and versioned SQL migrations.

Migrations are `.sql` files in `core/adapters/migrations/<stream>/`, named `NNNN_what.sql`. The
job store and the account store each have their own stream and create only their own tables, so
they can live in one database or in two. A store applies its stream's missing migrations when it
opens, in one transaction that first takes a transaction-scoped advisory lock: processes starting
together queue on the lock, and each migration runs once and is recorded in `schema_migrations`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 10
CONNECT_TIMEOUT_SECONDS = 5.0
# A query slower than this is stuck (a lock held by a dead client, a saturated server).
COMMAND_TIMEOUT_SECONDS = 30.0
# Waiting for another process's migrations, and running ours, may take longer than a query.
MIGRATION_TIMEOUT_SECONDS = 120.0
CLOSE_TIMEOUT_SECONDS = 10.0
# One fixed key for every jobgate process: advisory locks are per database.
MIGRATION_LOCK_KEY = int.from_bytes(b"jobgate!", "big")
MIGRATIONS_PACKAGE = "core.adapters.migrations"
# Every query the stores make is served by an index (tests/contract/test_postgres_extras.py).
# PostgreSQL plans a prepared statement once for all values after a few runs, with the
# statistics of that moment: planned while a new deployment's tables are still empty, a write by
# id would scan the whole table, and keep doing so as it grows, until the next ANALYZE.
SESSION_SETTINGS = {"enable_seqscan": "off"}

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    stream TEXT NOT NULL,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, version)
)
"""


class CannotOpen(Exception):
    """The database could not be reached, refused us, or could not be migrated: one line why."""


@dataclass(frozen=True)
class Migration:
    stream: str
    version: int
    name: str
    sql: str


def load_migrations(stream: str) -> list[Migration]:
    """The stream's migrations in version order, read from the installed package."""
    folder = resources.files(MIGRATIONS_PACKAGE) / stream
    migrations = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        number, _, name = entry.name.removesuffix(".sql").partition("_")
        if not number.isdigit() or not name:
            raise ValueError(f"migration file {stream}/{entry.name} is not named NNNN_what.sql")
        migrations.append(Migration(stream, int(number), name, entry.read_text(encoding="utf-8")))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    # Gaps are allowed: branches reserve numbers ahead (jobs/0003 and jobs/0004 were written in
    # parallel), and migrate() applies every migration not yet recorded, whatever its number.
    if len(set(versions)) != len(versions) or 0 in versions:
        raise ValueError(f"migrations of {stream!r} need unique numbers from 1, found {versions}")
    return migrations


async def migrate(conn: asyncpg.Connection, migrations: list[Migration]) -> list[Migration]:
    """Applies the migrations not yet recorded, all in one transaction; returns those applied."""
    applied: list[Migration] = []
    timeout = MIGRATION_TIMEOUT_SECONDS
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY, timeout=timeout)
        await conn.execute(_LEDGER, timeout=timeout)
        streams = sorted({m.stream for m in migrations})
        done = {
            (row["stream"], row["version"])
            for row in await conn.fetch(
                "SELECT stream, version FROM schema_migrations WHERE stream = ANY($1::text[])",
                streams,
                timeout=timeout,
            )
        }
        for migration in migrations:
            if (migration.stream, migration.version) in done:
                continue
            try:
                await conn.execute(migration.sql, timeout=timeout)
            except asyncpg.PostgresError as exc:
                raise CannotOpen(
                    f"migration {migration.stream}/{migration.version:04d}_{migration.name}"
                    f" failed: {_one_line(exc)}"
                ) from exc
            await conn.execute(
                "INSERT INTO schema_migrations (stream, version, name) VALUES ($1, $2, $3)",
                migration.stream,
                migration.version,
                migration.name,
                timeout=timeout,
            )
            applied.append(migration)
    for migration in applied:
        log.info(
            "applied migration %s/%04d_%s", migration.stream, migration.version, migration.name
        )
    return applied


async def open_pool(dsn: str, stream: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> asyncpg.Pool:
    """A pool on `dsn` whose database has every migration of `stream` applied.

    Raises CannotOpen, with one line saying why, when that cannot be had.
    """
    migrations = load_migrations(stream)
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=pool_size,
            timeout=CONNECT_TIMEOUT_SECONDS,
            command_timeout=COMMAND_TIMEOUT_SECONDS,
            reset=_keep_session,
            server_settings=SESSION_SETTINGS,
        )
    except ValueError as exc:  # asyncpg's ClientConfigurationError is one too
        raise CannotOpen(f"malformed PostgreSQL URL: {_one_line(exc)}") from exc
    except asyncpg.PostgresError as exc:
        raise CannotOpen(f"PostgreSQL refused the connection: {_one_line(exc)}") from exc
    except (TimeoutError, OSError, asyncpg.InterfaceError) as exc:
        raise CannotOpen(
            f"cannot reach PostgreSQL within {CONNECT_TIMEOUT_SECONDS:g} s: {_one_line(exc)}"
        ) from exc
    try:
        async with pool.acquire() as conn:
            await migrate(conn, migrations)
    except BaseException as exc:
        await close_pool(pool)
        if isinstance(exc, TimeoutError):
            raise CannotOpen(
                f"the {stream} migrations did not finish within {MIGRATION_TIMEOUT_SECONDS:g} s"
            ) from exc
        if isinstance(exc, asyncpg.PostgresError):
            raise CannotOpen(f"cannot migrate the {stream} tables: {_one_line(exc)}") from exc
        raise
    return pool


async def close_pool(pool: asyncpg.Pool) -> None:
    """Closes the pool once its connections are released; cuts them if that takes too long."""
    try:
        await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning(
            "PostgreSQL connections still busy after %g s: terminated", CLOSE_TIMEOUT_SECONDS
        )
        pool.terminate()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Returns a connection to the pool as it is.

    The stores never change session state (no SET, LISTEN, cursors or session advisory locks),
    and asyncpg's default reset would cost a round trip on every release.
    """


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
