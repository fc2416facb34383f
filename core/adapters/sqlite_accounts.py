"""The AccountStore on one SQLite file: API keys, stored only as the sha256 of their secret.

The key format, hashing and constant-time check live in core.adapters.api_keys, shared by every
account store.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from core.adapters import codec
from core.adapters.api_keys import NO_HASH, issue_key, parse_key, secret_matches
from core.adapters.sqlite import SqliteRunner
from core.ports import Principal

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
)
"""


class SqliteAccountStore:
    """API keys in SQLite; see core.ports.AccountStore for the semantics."""

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
        row = await self._db.run(lambda conn: _select_key(conn, parsed.key_id))
        owner, stored_hash, revoked = row or ("", NO_HASH, True)
        if not secret_matches(stored_hash, parsed.secret) or revoked:
            return None
        return Principal(owner=owner, key_id=parsed.key_id)

    async def create_key(self, owner: str) -> str:
        if not owner:
            raise ValueError("an API key needs an owner")
        key = issue_key()
        now = codec.time_to_micros(datetime.now(UTC))
        await self._db.run(lambda conn: _insert_key(conn, key.key_id, owner, key.secret_hash, now))
        return key.text


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute(SCHEMA)


def _insert_key(
    conn: sqlite3.Connection, key_id: str, owner: str, secret_hash: str, micros: int
) -> None:
    conn.execute(
        "INSERT INTO keys (key_id, owner, secret_sha256, create_time) VALUES (?, ?, ?, ?)",
        (key_id, owner, secret_hash, micros),
    )


def _select_key(conn: sqlite3.Connection, key_id: str) -> tuple[str, str, bool] | None:
    row = conn.execute(
        "SELECT owner, secret_sha256, revoked FROM keys WHERE key_id = ?", (key_id,)
    ).fetchone()
    return (row[0], row[1], bool(row[2])) if row else None
