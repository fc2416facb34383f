"""The AccountStore on one SQLite file, for the embedded mode: the PostgreSQL store's tables and
rules (see core.adapters.postgres_accounts), with times as integer microseconds.

The schema is versioned with SQLite's `user_version` and migrated at open. Every call runs in its
own transaction (or savepoint) on the runner's one thread, so a hold's check and write cannot
interleave with another's: the balance never goes below zero.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from core.adapters import codec
from core.adapters.api_keys import (
    NO_HASH,
    issue_key,
    parse_key,
    scopes_from_text,
    scopes_text,
    secret_matches,
)
from core.adapters.sqlite import SqliteRunner
from core.billing import (
    DEFAULT_TARIFF,
    ApiKeyInfo,
    Balance,
    Ending,
    HoldRequest,
    HoldTerms,
    Scope,
    Settlement,
    Tariff,
    Usage,
    concurrency_exceeded,
    insufficient_balance,
    rate_exceeded,
)
from core.catalog import Price, PriceUnit
from core.errors import NotFound, Reason
from core.ports import OpenHold, Principal

LAST_USED_RESOLUTION = timedelta(minutes=1)
CONCURRENCY_RETRY_SECONDS = 1.0

# Version 1: API keys (the table was `keys` before versions were counted).
_V1 = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
)
"""

# Version 2: users, tariffs, holds, the ledger; the same as accounts/0002_billing.sql.
_V2 = """
CREATE TABLE tariffs (
    name TEXT PRIMARY KEY,
    max_concurrent_jobs INTEGER NOT NULL DEFAULT 0 CHECK (max_concurrent_jobs >= 0),
    submits_per_minute INTEGER NOT NULL DEFAULT 0 CHECK (submits_per_minute >= 0),
    update_time INTEGER NOT NULL
);
CREATE TABLE tariff_prices (
    tariff TEXT NOT NULL REFERENCES tariffs (name) ON DELETE CASCADE,
    model TEXT NOT NULL,
    per_job_micros INTEGER NOT NULL CHECK (per_job_micros >= 0),
    per_unit_micros INTEGER NOT NULL CHECK (per_unit_micros >= 0),
    unit TEXT NOT NULL,
    PRIMARY KEY (tariff, model)
);
CREATE TABLE users (
    owner TEXT PRIMARY KEY,
    tariff TEXT REFERENCES tariffs (name),
    available_micros INTEGER NOT NULL DEFAULT 0 CHECK (available_micros >= 0),
    held_micros INTEGER NOT NULL DEFAULT 0 CHECK (held_micros >= 0),
    open_holds INTEGER NOT NULL DEFAULT 0 CHECK (open_holds >= 0),
    create_time INTEGER NOT NULL
);
INSERT INTO users (owner, create_time) SELECT DISTINCT owner, create_time FROM api_keys
    WHERE true ON CONFLICT DO NOTHING;
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'jobs';
ALTER TABLE api_keys ADD COLUMN last_used_time INTEGER;
CREATE INDEX api_keys_by_owner ON api_keys (owner);
CREATE TABLE holds (
    job_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES users (owner),
    request_id TEXT,
    model TEXT NOT NULL,
    per_job_micros INTEGER NOT NULL,
    per_unit_micros INTEGER NOT NULL,
    unit TEXT NOT NULL,
    max_units INTEGER NOT NULL,
    amount_micros INTEGER NOT NULL CHECK (amount_micros >= 0),
    create_time INTEGER NOT NULL,
    settle_time INTEGER,
    ending TEXT,
    UNIQUE (owner, request_id)
);
CREATE INDEX holds_open ON holds (create_time, job_id) WHERE settle_time IS NULL;
CREATE TABLE ledger (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES users (owner),
    kind TEXT NOT NULL CHECK (kind IN ('TOP_UP', 'HOLD', 'CAPTURE', 'RELEASE', 'REFUND')),
    amount_micros INTEGER NOT NULL CHECK (amount_micros >= 0),
    reference TEXT NOT NULL,
    job_id TEXT,
    model TEXT,
    units INTEGER NOT NULL DEFAULT 0,
    create_time INTEGER NOT NULL,
    UNIQUE (kind, reference)
);
CREATE INDEX ledger_by_owner ON ledger (owner, create_time);
CREATE TABLE submit_counts (
    owner TEXT NOT NULL,
    minute INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (owner, minute)
);
"""


def _migrate_v1(conn: sqlite3.Connection) -> None:
    legacy = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'keys'").fetchone()
    if legacy:
        conn.execute("ALTER TABLE keys RENAME TO api_keys")
    conn.execute(_V1)


def _migrate_v2(conn: sqlite3.Connection) -> None:
    for statement in _V2.split(";"):
        if statement.strip():
            conn.execute(statement)


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migrate_v1, _migrate_v2)

_KEY_COLUMNS = "key_id, owner, scopes, revoked, last_used_time"
_TARIFF_SELECT = "SELECT name, max_concurrent_jobs, submits_per_minute FROM tariffs WHERE name = ?"
_LEDGER_INSERT = (
    "INSERT INTO ledger (owner, kind, amount_micros, reference, job_id, model, units,"
    " create_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, reference) DO NOTHING"
)


class SqliteAccountStore:
    """Accounts in SQLite; see core.ports.AccountStore for the semantics."""

    def __init__(self, runner: SqliteRunner) -> None:
        self._db = runner

    @classmethod
    async def open(cls, path: Path) -> SqliteAccountStore:
        return cls(await SqliteRunner.open(path, _create_schema))

    async def close(self) -> None:
        await self._db.close()

    async def authenticate(self, api_key: str) -> Principal | None:
        parsed = parse_key(api_key)
        if parsed is None:
            return None
        now = _now_micros()
        return await self._db.run(
            lambda conn: _authenticate(conn, parsed.key_id, parsed.secret, now)
        )

    async def create_key(self, owner: str, scopes: Collection[Scope] = (Scope.JOBS,)) -> str:
        if not owner:
            raise ValueError("an API key needs an owner")
        names = scopes_text(scopes)
        key = issue_key()
        now = _now_micros()

        def insert(conn: sqlite3.Connection) -> None:
            _ensure_user(conn, owner, now)
            conn.execute(
                "INSERT INTO api_keys (key_id, owner, secret_sha256, create_time, scopes)"
                " VALUES (?, ?, ?, ?, ?)",
                (key.key_id, owner, key.secret_hash, now, names),
            )

        await self._db.run(insert)
        return key.text

    async def revoke_key(self, key_id: str) -> ApiKeyInfo | None:
        row = await self._db.run(
            lambda conn: conn.execute(
                f"UPDATE api_keys SET revoked = 1 WHERE key_id = ? RETURNING {_KEY_COLUMNS}",
                (key_id,),
            ).fetchone()
        )
        return _key_info(row) if row else None

    async def list_keys(self, owner: str) -> list[ApiKeyInfo]:
        rows = await self._db.run(
            lambda conn: conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE owner = ? ORDER BY create_time, key_id",
                (owner,),
            ).fetchall()
        )
        return [_key_info(row) for row in rows]

    async def create_user(self, owner: str, tariff: str | None = None) -> bool:
        if not owner:
            raise ValueError("a user needs a name")
        now = _now_micros()

        def insert(conn: sqlite3.Connection) -> bool:
            _check_tariff(conn, tariff)
            return bool(
                conn.execute(
                    "INSERT INTO users (owner, tariff, create_time) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (owner, tariff, now),
                ).rowcount
            )

        return await self._db.run(insert)

    async def put_tariff(self, tariff: Tariff) -> None:
        now = _now_micros()

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO tariffs (name, max_concurrent_jobs, submits_per_minute, update_time)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " max_concurrent_jobs = excluded.max_concurrent_jobs,"
                " submits_per_minute = excluded.submits_per_minute,"
                " update_time = excluded.update_time",
                (tariff.name, tariff.max_concurrent_jobs, tariff.submits_per_minute, now),
            )
            conn.execute("DELETE FROM tariff_prices WHERE tariff = ?", (tariff.name,))
            conn.executemany(
                "INSERT INTO tariff_prices (tariff, model, per_job_micros, per_unit_micros, unit)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (tariff.name, m, p.per_job_micros, p.per_unit_micros, p.unit.value)
                    for m, p in sorted(tariff.prices.items())
                ],
            )

        await self._db.run(put)

    async def get_tariff(self, name: str) -> Tariff | None:
        return await self._db.run(lambda conn: _select_tariff(conn, name))

    async def assign_tariff(self, owner: str, tariff: str | None) -> None:
        def assign(conn: sqlite3.Connection) -> None:
            _check_tariff(conn, tariff)
            if not conn.execute(
                "UPDATE users SET tariff = ? WHERE owner = ?", (tariff, owner)
            ).rowcount:
                raise _user_not_found(owner)

        await self._db.run(assign)

    async def top_up(self, owner: str, amount_micros: int, reference: str) -> Balance:
        if amount_micros <= 0:
            raise ValueError(f"a top-up must be positive, not {amount_micros}")
        now = _now_micros()

        def top_up(conn: sqlite3.Connection) -> Balance:
            if _select_balance(conn, owner) is None:
                raise _user_not_found(owner)
            added = conn.execute(
                _LEDGER_INSERT, (owner, "TOP_UP", amount_micros, reference, None, None, 0, now)
            ).rowcount
            if added:
                conn.execute(
                    "UPDATE users SET available_micros = available_micros + ? WHERE owner = ?",
                    (amount_micros, owner),
                )
            balance = _select_balance(conn, owner)
            assert balance is not None
            return balance

        return await self._db.run(top_up)

    async def balance(self, owner: str) -> Balance | None:
        return await self._db.run(lambda conn: _select_balance(conn, owner))

    async def hold(self, request: HoldRequest) -> str:
        now = _now_micros()
        return await self._db.run(lambda conn: _hold(conn, request, now, time.time()))

    async def settle(self, job_id: str, ending: Ending, units: int = 0) -> Settlement | None:
        now = _now_micros()
        return await self._db.run(lambda conn: _settle(conn, job_id, ending, units, now))

    async def refund(self, job_id: str) -> int | None:
        now = _now_micros()
        return await self._db.run(lambda conn: _refund(conn, job_id, now))

    async def open_holds(
        self, older_than: datetime, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[OpenHold]:
        since, since_id = (codec.time_to_micros(after[0]), after[1]) if after else (-1, "")
        rows = await self._db.run(
            lambda conn: conn.execute(
                "SELECT job_id, owner, create_time FROM holds"
                " WHERE settle_time IS NULL AND create_time < ? AND (create_time, job_id) > (?, ?)"
                " ORDER BY create_time, job_id LIMIT ?",
                (codec.time_to_micros(older_than), since, since_id, limit),
            ).fetchall()
        )
        return [OpenHold(job_id, owner, codec.time_from_micros(t)) for job_id, owner, t in rows]

    async def expire_rate_counters(self, before: datetime) -> None:
        minute = int(before.timestamp() // 60)
        await self._db.run(
            lambda conn: conn.execute("DELETE FROM submit_counts WHERE minute < ?", (minute,))
        )

    async def usage(self, owner: str, since: date, limit: int) -> list[Usage]:
        start = codec.time_to_micros(datetime(since.year, since.month, since.day, tzinfo=UTC))
        rows = await self._db.run(
            lambda conn: conn.execute(
                "SELECT date(create_time / 1000000, 'unixepoch') AS day, model,"
                " sum(kind = 'CAPTURE'), sum(CASE kind WHEN 'CAPTURE' THEN units ELSE 0 END),"
                " sum(CASE kind WHEN 'CAPTURE' THEN amount_micros ELSE -amount_micros END)"
                " FROM ledger WHERE owner = ? AND kind IN ('CAPTURE', 'REFUND')"
                " AND create_time >= ? GROUP BY 1, 2 ORDER BY 1 DESC, 2 LIMIT ?",
                (owner, start, limit),
            ).fetchall()
        )
        return [
            Usage(date.fromisoformat(day), model, jobs, units, cost)
            for day, model, jobs, units, cost in rows
        ]

    async def ledger_totals(self, owner: str) -> dict[str, int]:
        rows = await self._db.run(
            lambda conn: conn.execute(
                "SELECT kind, sum(amount_micros) FROM ledger WHERE owner = ? GROUP BY kind",
                (owner,),
            ).fetchall()
        )
        return {kind: total for kind, total in rows}


def _create_schema(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, migration in enumerate(MIGRATIONS, start=1):
        if number > version:
            migration(conn)
            conn.execute(f"PRAGMA user_version = {number}")


def _now_micros() -> int:
    return codec.time_to_micros(datetime.now(UTC))


def _ensure_user(conn: sqlite3.Connection, owner: str, now: int) -> None:
    conn.execute(
        "INSERT INTO users (owner, create_time) VALUES (?, ?) ON CONFLICT DO NOTHING", (owner, now)
    )


def _authenticate(conn: sqlite3.Connection, key_id: str, secret: str, now: int) -> Principal | None:
    row = conn.execute(
        "SELECT k.owner, k.secret_sha256, k.revoked, k.scopes, k.last_used_time, u.tariff"
        " FROM api_keys k LEFT JOIN users u ON u.owner = k.owner WHERE k.key_id = ?",
        (key_id,),
    ).fetchone()
    stored_hash, revoked = (row[1], bool(row[2])) if row else (NO_HASH, True)
    if not secret_matches(stored_hash, secret) or revoked or row is None:
        return None
    owner, _, _, scopes, last_used, tariff_name = row
    resolution = int(LAST_USED_RESOLUTION.total_seconds() * 1_000_000)
    if last_used is None or now - last_used >= resolution:
        conn.execute("UPDATE api_keys SET last_used_time = ? WHERE key_id = ?", (now, key_id))
    tariff = _select_tariff(conn, tariff_name) if tariff_name else None
    return Principal(
        owner=owner,
        key_id=key_id,
        scopes=scopes_from_text(scopes),
        tariff=tariff or DEFAULT_TARIFF,
    )


def _select_tariff(conn: sqlite3.Connection, name: str) -> Tariff | None:
    row = conn.execute(_TARIFF_SELECT, (name,)).fetchone()
    if row is None:
        return None
    prices = conn.execute(
        "SELECT model, per_job_micros, per_unit_micros, unit FROM tariff_prices WHERE tariff = ?",
        (name,),
    ).fetchall()
    return Tariff(
        name=row[0],
        prices={m: Price(job, unit_price, PriceUnit(unit)) for m, job, unit_price, unit in prices},
        max_concurrent_jobs=row[1],
        submits_per_minute=row[2],
    )


def _check_tariff(conn: sqlite3.Connection, tariff: str | None) -> None:
    if tariff is not None and conn.execute(_TARIFF_SELECT, (tariff,)).fetchone() is None:
        raise NotFound(f"no tariff {tariff!r}", reason=Reason.TARIFF_NOT_FOUND)


def _user_not_found(owner: str) -> NotFound:
    return NotFound(f"no user {owner!r}", reason=Reason.USER_NOT_FOUND)


def _select_balance(conn: sqlite3.Connection, owner: str) -> Balance | None:
    row = conn.execute(
        "SELECT owner, available_micros, held_micros FROM users WHERE owner = ?", (owner,)
    ).fetchone()
    return Balance(*row) if row else None


def _hold(conn: sqlite3.Connection, request: HoldRequest, now: int, clock: float) -> str:
    terms, tariff, owner = request.terms, request.tariff, request.owner
    amount = terms.hold_micros
    if request.request_id is not None:
        held_for = conn.execute(
            "SELECT job_id FROM holds WHERE owner = ? AND request_id = ?",
            (owner, request.request_id),
        ).fetchone()
        if held_for is not None:
            return str(held_for[0])
    if tariff.submits_per_minute:
        minute, into_minute = divmod(clock, 60)
        counted = conn.execute(
            "INSERT INTO submit_counts (owner, minute, count) VALUES (?, ?, 1)"
            " ON CONFLICT (owner, minute) DO UPDATE SET count = count + 1 WHERE count < ?"
            " RETURNING count",
            (owner, int(minute), tariff.submits_per_minute),
        ).fetchone()
        if counted is None:
            raise rate_exceeded(tariff.submits_per_minute, 60 - into_minute)
    limit = tariff.max_concurrent_jobs
    taken = conn.execute(
        "UPDATE users SET available_micros = available_micros - ?,"
        " held_micros = held_micros + ?, open_holds = open_holds + 1"
        " WHERE owner = ? AND available_micros >= ? AND (? = 0 OR open_holds < ?)",
        (amount, amount, owner, amount, limit, limit),
    ).rowcount
    if not taken:
        balance = _select_balance(conn, owner)
        available = balance.available_micros if balance else 0
        if balance is not None and available >= amount:
            raise concurrency_exceeded(limit, CONCURRENCY_RETRY_SECONDS)
        raise insufficient_balance(amount, available)
    conn.execute(
        "INSERT INTO holds (job_id, owner, request_id, model, per_job_micros, per_unit_micros,"
        " unit, max_units, amount_micros, create_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            request.job_id,
            owner,
            request.request_id,
            terms.model,
            terms.per_job_micros,
            terms.per_unit_micros,
            terms.unit.value,
            terms.max_units,
            amount,
            now,
        ),
    )
    conn.execute(
        _LEDGER_INSERT,
        (owner, "HOLD", amount, request.job_id, request.job_id, terms.model, 0, now),
    )
    return request.job_id


def _settle(
    conn: sqlite3.Connection, job_id: str, ending: Ending, units: int, now: int
) -> Settlement | None:
    row = conn.execute(
        "SELECT owner, model, per_job_micros, per_unit_micros, unit, max_units, amount_micros"
        " FROM holds WHERE job_id = ? AND settle_time IS NULL",
        (job_id,),
    ).fetchone()
    if row is None:
        return None
    owner, model, per_job, per_unit, unit, max_units, amount = row
    terms = HoldTerms(model, per_job, per_unit, PriceUnit(unit), max_units)
    captured = terms.capture_micros(ending, units)
    released = amount - captured
    conn.execute(
        "UPDATE holds SET settle_time = ?, ending = ?,"
        " request_id = CASE WHEN ? = 'NOT_RECORDED' THEN NULL ELSE request_id END"
        " WHERE job_id = ?",
        (now, ending.value, ending.value, job_id),
    )
    entries: list[tuple[Any, ...]] = []
    if ending in (Ending.SUCCEEDED, Ending.CANCELLED_RUNNING):
        used = min(units, max_units) if ending is Ending.SUCCEEDED else 0
        entries.append((owner, "CAPTURE", captured, job_id, job_id, model, used, now))
    if released:
        entries.append((owner, "RELEASE", released, job_id, job_id, model, 0, now))
    conn.executemany(_LEDGER_INSERT, entries)
    conn.execute(
        "UPDATE users SET held_micros = held_micros - ?, available_micros = available_micros + ?,"
        " open_holds = open_holds - 1 WHERE owner = ?",
        (amount, released, owner),
    )
    return Settlement(job_id, owner, captured, released)


def _refund(conn: sqlite3.Connection, job_id: str, now: int) -> int | None:
    capture = conn.execute(
        "SELECT owner, amount_micros, model FROM ledger WHERE kind = 'CAPTURE' AND reference = ?",
        (job_id,),
    ).fetchone()
    if capture is None or capture[1] == 0:
        return None
    owner, amount, model = capture
    if not conn.execute(
        _LEDGER_INSERT, (owner, "REFUND", amount, job_id, job_id, model, 0, now)
    ).rowcount:
        return None
    conn.execute(
        "UPDATE users SET available_micros = available_micros + ? WHERE owner = ?",
        (amount, owner),
    )
    return int(amount)


def _key_info(row: tuple[Any, ...]) -> ApiKeyInfo:
    key_id, owner, scopes, revoked, last_used = row
    used = codec.time_from_micros(last_used) if last_used is not None else None
    return ApiKeyInfo(key_id, owner, scopes_from_text(scopes), bool(revoked), used)
