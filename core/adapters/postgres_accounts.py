"""The AccountStore on PostgreSQL: API keys, stored only as the sha256 of their secret.

Same key format and checks as the SQLite store (core.adapters.api_keys); the tables come from the
`accounts` migrations, so this store may share a database with the job store or have its own.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from core.adapters.api_keys import NO_HASH, issue_key, parse_key, secret_matches
from core.adapters.postgres import DEFAULT_POOL_SIZE, close_pool, open_pool
from core.ports import Principal

MIGRATIONS = "accounts"


class PostgresAccountStore:
    """API keys in PostgreSQL; see core.ports.AccountStore for the semantics."""

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
        row = await self._pool.fetchrow(
            "SELECT owner, secret_sha256, revoked FROM api_keys WHERE key_id = $1", parsed.key_id
        )
        owner, stored_hash, revoked = row or ("", NO_HASH, True)
        if not secret_matches(stored_hash, parsed.secret) or revoked:
            return None
        return Principal(owner=owner, key_id=parsed.key_id)

    async def create_key(self, owner: str) -> str:
        if not owner:
            raise ValueError("an API key needs an owner")
        key = issue_key()
        await self._pool.execute(
            "INSERT INTO api_keys (key_id, owner, secret_sha256, create_time)"
            " VALUES ($1, $2, $3, $4)",
            key.key_id,
            owner,
            key.secret_hash,
            datetime.now(UTC),
        )
        return key.text
