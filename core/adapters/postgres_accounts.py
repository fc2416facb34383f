"""The AccountStore on PostgreSQL: users, API keys (only the sha256 of their secret), tariffs,
and money as an append-only ledger beside a balance row per user kept in the same transaction.

Same key format and checks as the SQLite store (core.adapters.api_keys); the tables come from the
`accounts` migrations, so this store may share a database with the job store or have its own.

A hold is one conditional UPDATE of the user's balance row (`available >= hold`): concurrent
holds queue on that row's lock and each re-checks the condition once it has it, so however many
race, the balance never goes below zero. The tariff's submit rate is a counter row per owner and
minute in the same transaction, so it holds across every server replica.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from core.adapters.api_keys import (
    NO_HASH,
    issue_key,
    parse_key,
    scopes_from_text,
    scopes_text,
    secret_matches,
)
from core.adapters.postgres import DEFAULT_POOL_SIZE, close_pool, open_pool
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

MIGRATIONS = "accounts"
# A key's last use is written when the stored one is older than this: not a write per call.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A concurrency limit has no moment it clears; this is how soon a retry is worth it.
CONCURRENCY_RETRY_SECONDS = 1.0

_AUTHENTICATE = """
SELECT k.owner, k.secret_sha256, k.revoked, k.scopes, k.last_used_time,
       t.name AS tariff, t.max_concurrent_jobs, t.submits_per_minute,
       (SELECT coalesce(json_agg(json_build_array(p.model, p.per_job_micros, p.per_unit_micros,
                                                  p.unit)), '[]')
        FROM tariff_prices p WHERE p.tariff = t.name) AS prices
FROM api_keys k
LEFT JOIN users u ON u.owner = k.owner
LEFT JOIN tariffs t ON t.name = u.tariff
WHERE k.key_id = $1
"""

_ENSURE_USER = "INSERT INTO users (owner, create_time) VALUES ($1, $2) ON CONFLICT DO NOTHING"

_HOLD_INSERT = """
INSERT INTO holds (job_id, owner, request_id, model, per_job_micros, per_unit_micros, unit,
                   max_units, amount_micros, create_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (owner, request_id) DO NOTHING
RETURNING job_id
"""

_COUNT_SUBMIT = """
INSERT INTO submit_counts (owner, minute, count) VALUES ($1, $2, 1)
ON CONFLICT (owner, minute) DO UPDATE SET count = submit_counts.count + 1
WHERE submit_counts.count < $3
RETURNING count
"""

_TAKE_HOLD = """
UPDATE users SET available_micros = available_micros - $2, held_micros = held_micros + $2,
    open_holds = open_holds + 1
WHERE owner = $1 AND available_micros >= $2 AND ($3 = 0 OR open_holds < $3)
RETURNING available_micros
"""

_LEDGER_INSERT = """
INSERT INTO ledger (owner, kind, amount_micros, reference, job_id, model, units, create_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (kind, reference) DO NOTHING
"""

_USAGE = """
SELECT (create_time AT TIME ZONE 'UTC')::date AS day, model,
       count(*) FILTER (WHERE kind = 'CAPTURE') AS jobs,
       coalesce(sum(units) FILTER (WHERE kind = 'CAPTURE'), 0) AS units,
       sum(CASE kind WHEN 'CAPTURE' THEN amount_micros ELSE -amount_micros END) AS cost
FROM ledger
WHERE owner = $1 AND kind IN ('CAPTURE', 'REFUND') AND create_time >= $2
GROUP BY 1, 2
ORDER BY 1 DESC, 2
LIMIT $3
"""


class PostgresAccountStore:
    """Accounts in PostgreSQL; see core.ports.AccountStore for the semantics."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> PostgresAccountStore:
        """Connects and applies the accounts migrations; raises postgres.CannotOpen if it cannot."""
        return cls(await open_pool(dsn, MIGRATIONS, pool_size=pool_size))

    async def close(self) -> None:
        await close_pool(self._pool)

    async def authenticate(self, api_key: str) -> Principal | None:
        parsed = parse_key(api_key)
        if parsed is None:
            return None
        row = await self._pool.fetchrow(_AUTHENTICATE, parsed.key_id)
        stored_hash, revoked = (row["secret_sha256"], row["revoked"]) if row else (NO_HASH, True)
        if not secret_matches(stored_hash, parsed.secret) or revoked or row is None:
            return None
        now = _now()
        last_used = row["last_used_time"]
        if last_used is None or now - last_used >= LAST_USED_RESOLUTION:
            await self._pool.execute(
                "UPDATE api_keys SET last_used_time = $2 WHERE key_id = $1", parsed.key_id, now
            )
        return Principal(
            owner=row["owner"],
            key_id=parsed.key_id,
            scopes=scopes_from_text(row["scopes"]),
            tariff=_tariff(row),
        )

    async def create_key(self, owner: str, scopes: Collection[Scope] = (Scope.JOBS,)) -> str:
        if not owner:
            raise ValueError("an API key needs an owner")
        scope_names = scopes_text(scopes)
        key = issue_key()
        now = _now()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_ENSURE_USER, owner, now)
            await conn.execute(
                "INSERT INTO api_keys (key_id, owner, secret_sha256, create_time, scopes)"
                " VALUES ($1, $2, $3, $4, $5)",
                key.key_id,
                owner,
                key.secret_hash,
                now,
                scope_names,
            )
        return key.text

    async def revoke_key(self, key_id: str) -> ApiKeyInfo | None:
        row = await self._pool.fetchrow(
            "UPDATE api_keys SET revoked = true WHERE key_id = $1"
            " RETURNING key_id, owner, scopes, revoked, last_used_time",
            key_id,
        )
        return _key_info(row) if row else None

    async def list_keys(self, owner: str) -> list[ApiKeyInfo]:
        rows = await self._pool.fetch(
            "SELECT key_id, owner, scopes, revoked, last_used_time FROM api_keys WHERE owner = $1"
            " ORDER BY create_time, key_id",
            owner,
        )
        return [_key_info(row) for row in rows]

    async def create_user(self, owner: str, tariff: str | None = None) -> bool:
        if not owner:
            raise ValueError("a user needs a name")
        async with self._pool.acquire() as conn, conn.transaction():
            await _check_tariff(conn, tariff)
            created = await conn.fetchval(
                "INSERT INTO users (owner, tariff, create_time) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING true",
                owner,
                tariff,
                _now(),
            )
        return bool(created)

    async def put_tariff(self, tariff: Tariff) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO tariffs (name, max_concurrent_jobs, submits_per_minute, update_time)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET"
                " max_concurrent_jobs = $2, submits_per_minute = $3, update_time = $4",
                tariff.name,
                tariff.max_concurrent_jobs,
                tariff.submits_per_minute,
                _now(),
            )
            await conn.execute("DELETE FROM tariff_prices WHERE tariff = $1", tariff.name)
            await conn.executemany(
                "INSERT INTO tariff_prices (tariff, model, per_job_micros, per_unit_micros, unit)"
                " VALUES ($1, $2, $3, $4, $5)",
                [
                    (tariff.name, m, p.per_job_micros, p.per_unit_micros, p.unit.value)
                    for m, p in sorted(tariff.prices.items())
                ],
            )

    async def get_tariff(self, name: str) -> Tariff | None:
        row = await self._pool.fetchrow(
            "SELECT t.name AS tariff, t.max_concurrent_jobs, t.submits_per_minute,"
            " (SELECT coalesce(json_agg(json_build_array(p.model, p.per_job_micros,"
            "   p.per_unit_micros, p.unit)), '[]') FROM tariff_prices p WHERE p.tariff = t.name)"
            " AS prices FROM tariffs t WHERE t.name = $1",
            name,
        )
        return _tariff(row) if row else None

    async def assign_tariff(self, owner: str, tariff: str | None) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await _check_tariff(conn, tariff)
            found = await conn.fetchval(
                "UPDATE users SET tariff = $2 WHERE owner = $1 RETURNING true", owner, tariff
            )
        if not found:
            raise _user_not_found(owner)

    async def top_up(self, owner: str, amount_micros: int, reference: str) -> Balance:
        if amount_micros <= 0:
            raise ValueError(f"a top-up must be positive, not {amount_micros}")
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT true FROM users WHERE owner = $1", owner) is None:
                raise _user_not_found(owner)
            added = await conn.execute(
                _LEDGER_INSERT, owner, "TOP_UP", amount_micros, reference, None, None, 0, _now()
            )
            if added == "INSERT 0 1":
                await conn.execute(
                    "UPDATE users SET available_micros = available_micros + $2 WHERE owner = $1",
                    owner,
                    amount_micros,
                )
            row = await conn.fetchrow(
                "SELECT owner, available_micros, held_micros FROM users WHERE owner = $1", owner
            )
        return _balance(row)

    async def balance(self, owner: str) -> Balance | None:
        row = await self._pool.fetchrow(
            "SELECT owner, available_micros, held_micros FROM users WHERE owner = $1", owner
        )
        return _balance(row) if row else None

    async def hold(self, request: HoldRequest) -> str:
        terms, tariff, now = request.terms, request.tariff, _now()
        amount = terms.hold_micros
        async with self._pool.acquire() as conn, conn.transaction():
            held_for = await conn.fetchval(
                _HOLD_INSERT,
                request.job_id,
                request.owner,
                request.request_id,
                terms.model,
                terms.per_job_micros,
                terms.per_unit_micros,
                terms.unit.value,
                terms.max_units,
                amount,
                now,
            )
            if held_for is None:
                # A new statement sees the hold that ON CONFLICT waited for.
                return str(
                    await conn.fetchval(
                        "SELECT job_id FROM holds WHERE owner = $1 AND request_id = $2",
                        request.owner,
                        request.request_id,
                    )
                )
            if tariff.submits_per_minute:
                minute, into_minute = divmod(time.time(), 60)
                counted = await conn.fetchval(
                    _COUNT_SUBMIT, request.owner, int(minute), tariff.submits_per_minute
                )
                if counted is None:
                    raise rate_exceeded(tariff.submits_per_minute, 60 - into_minute)
            # The balance row last: concurrent holds of one owner queue on its lock, so it is
            # held for this statement and the commit only.
            await conn.execute(
                _LEDGER_INSERT,
                request.owner,
                "HOLD",
                amount,
                request.job_id,
                request.job_id,
                terms.model,
                0,
                now,
            )
            taken = await conn.fetchval(
                _TAKE_HOLD, request.owner, amount, tariff.max_concurrent_jobs
            )
            if taken is None:
                row = await conn.fetchrow(
                    "SELECT available_micros, open_holds FROM users WHERE owner = $1",
                    request.owner,
                )
                available = row["available_micros"] if row else 0
                if row is not None and available >= amount:
                    raise concurrency_exceeded(
                        tariff.max_concurrent_jobs, CONCURRENCY_RETRY_SECONDS
                    )
                raise insufficient_balance(amount, available)
        return request.job_id

    async def settle(self, job_id: str, ending: Ending, units: int = 0) -> Settlement | None:
        now = _now()
        async with self._pool.acquire() as conn, conn.transaction():
            # Closing the hold is the statement that decides: of settlements racing, one finds
            # it open; the others wait on its row lock, then find it closed.
            row = await conn.fetchrow(
                "UPDATE holds SET settle_time = $2, ending = $3,"
                " request_id = CASE WHEN $3 = 'NOT_RECORDED' THEN NULL ELSE request_id END"
                " WHERE job_id = $1 AND settle_time IS NULL"
                " RETURNING owner, model, per_job_micros, per_unit_micros, unit, max_units,"
                " amount_micros",
                job_id,
                now,
                ending.value,
            )
            if row is None:
                return None
            terms = _terms(row)
            owner, amount = row["owner"], row["amount_micros"]
            captured = terms.capture_micros(ending, units)
            released = amount - captured
            entries = []
            if ending in (Ending.SUCCEEDED, Ending.CANCELLED_RUNNING):
                used = min(units, terms.max_units) if ending is Ending.SUCCEEDED else 0
                entries.append((owner, "CAPTURE", captured, job_id, job_id, terms.model, used, now))
            if released:
                entries.append((owner, "RELEASE", released, job_id, job_id, terms.model, 0, now))
            await conn.executemany(_LEDGER_INSERT, entries)
            await conn.execute(
                "UPDATE users SET held_micros = held_micros - $2,"
                " available_micros = available_micros + $3, open_holds = open_holds - 1"
                " WHERE owner = $1",
                owner,
                amount,
                released,
            )
        return Settlement(job_id, owner, captured, released)

    async def refund(self, job_id: str) -> int | None:
        async with self._pool.acquire() as conn, conn.transaction():
            capture = await conn.fetchrow(
                "SELECT owner, amount_micros, model FROM ledger"
                " WHERE kind = 'CAPTURE' AND reference = $1",
                job_id,
            )
            if capture is None or capture["amount_micros"] == 0:
                return None
            owner, amount = capture["owner"], capture["amount_micros"]
            added = await conn.execute(
                _LEDGER_INSERT, owner, "REFUND", amount, job_id, job_id, capture["model"], 0, _now()
            )
            if added != "INSERT 0 1":
                return None
            await conn.execute(
                "UPDATE users SET available_micros = available_micros + $2 WHERE owner = $1",
                owner,
                amount,
            )
        return int(amount)

    async def open_holds(
        self, older_than: datetime, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[OpenHold]:
        since, since_id = after or (datetime.min.replace(tzinfo=UTC), "")
        rows = await self._pool.fetch(
            "SELECT job_id, owner, create_time FROM holds"
            " WHERE settle_time IS NULL AND create_time < $1 AND (create_time, job_id) > ($3, $4)"
            " ORDER BY create_time, job_id LIMIT $2",
            older_than,
            limit,
            since,
            since_id,
        )
        return [OpenHold(r["job_id"], r["owner"], r["create_time"]) for r in rows]

    async def expire_rate_counters(self, before: datetime) -> None:
        await self._pool.execute(
            "DELETE FROM submit_counts WHERE minute < $1", int(before.timestamp() // 60)
        )

    async def usage(self, owner: str, since: date, limit: int) -> list[Usage]:
        start = datetime(since.year, since.month, since.day, tzinfo=UTC)
        rows = await self._pool.fetch(_USAGE, owner, start, limit)
        return [
            Usage(r["day"], r["model"], r["jobs"], int(r["units"]), int(r["cost"])) for r in rows
        ]

    async def ledger_totals(self, owner: str) -> dict[str, int]:
        """The sum of each kind of the owner's ledger entries: what the balance must equal."""
        rows = await self._pool.fetch(
            "SELECT kind, sum(amount_micros) AS total FROM ledger WHERE owner = $1 GROUP BY kind",
            owner,
        )
        return {r["kind"]: int(r["total"]) for r in rows}


def _now() -> datetime:
    return datetime.now(UTC)


async def _check_tariff(conn: asyncpg.Connection, tariff: str | None) -> None:
    if tariff is not None and not await conn.fetchval(
        "SELECT true FROM tariffs WHERE name = $1", tariff
    ):
        raise NotFound(f"no tariff {tariff!r}", reason=Reason.TARIFF_NOT_FOUND)


def _user_not_found(owner: str) -> NotFound:
    return NotFound(f"no user {owner!r}", reason=Reason.USER_NOT_FOUND)


def _tariff(row: Mapping[str, Any]) -> Tariff:
    if row["tariff"] is None:
        return DEFAULT_TARIFF
    return Tariff(
        name=row["tariff"],
        prices={
            model: Price(per_job, per_unit, PriceUnit(unit))
            for model, per_job, per_unit, unit in json.loads(row["prices"])
        },
        max_concurrent_jobs=row["max_concurrent_jobs"],
        submits_per_minute=row["submits_per_minute"],
    )


def _terms(row: Mapping[str, Any]) -> HoldTerms:
    return HoldTerms(
        model=row["model"],
        per_job_micros=row["per_job_micros"],
        per_unit_micros=row["per_unit_micros"],
        unit=PriceUnit(row["unit"]),
        max_units=row["max_units"],
    )


def _key_info(row: Mapping[str, Any]) -> ApiKeyInfo:
    return ApiKeyInfo(
        row["key_id"],
        row["owner"],
        scopes_from_text(row["scopes"]),
        row["revoked"],
        row["last_used_time"],
    )


def _balance(row: Mapping[str, Any]) -> Balance:
    return Balance(row["owner"], row["available_micros"], row["held_micros"])
