"""The AccountStore on one SQLite file: API keys, stored only as the sha256 of their secret.

A key reads `jg_<key_id>_<secret>`. The key_id is public (it finds the row and may be shown or
logged); the secret is random, seen once at creation, and checked by comparing hashes in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.adapters import codec
from core.adapters.sqlite import SqliteRunner
from core.ports import Principal

KEY_PREFIX = "jg_"
MAX_KEY_LENGTH = 200
_KEY_ID = re.compile(r"[0-9a-f]{12}")
# Compared against when the key_id is unknown, so that case costs the same as a wrong secret.
_NO_HASH = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
)
"""


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    secret: str


def parse_key(api_key: str) -> ParsedKey | None:
    """The parts of a well-formed key, or None."""
    if len(api_key) > MAX_KEY_LENGTH or not api_key.startswith(KEY_PREFIX):
        return None
    key_id, _, secret = api_key[len(KEY_PREFIX) :].partition("_")
    if not _KEY_ID.fullmatch(key_id) or not secret:
        return None
    return ParsedKey(key_id, secret)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


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
        owner, stored_hash, revoked = row or ("", _NO_HASH, True)
        matches = hmac.compare_digest(stored_hash.encode(), _hash(parsed.secret).encode())
        if not matches or revoked:
            return None
        return Principal(owner=owner, key_id=parsed.key_id)

    async def create_key(self, owner: str) -> str:
        if not owner:
            raise ValueError("an API key needs an owner")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = codec.time_to_micros(datetime.now(UTC))
        await self._db.run(lambda conn: _insert_key(conn, key_id, owner, _hash(secret), now))
        return f"{KEY_PREFIX}{key_id}_{secret}"


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
