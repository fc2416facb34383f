"""The embedded account store opens files written before billing, and migrates them once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from core.adapters.api_keys import issue_key
from core.adapters.sqlite_accounts import MIGRATIONS, SqliteAccountStore
from core.billing import DEFAULT_TARIFF, Balance, Scope

# The schema of the first release: one table, named `keys`.
LEGACY_SCHEMA = """
CREATE TABLE keys (
    key_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
)
"""


async def test_a_key_from_before_billing_still_runs_jobs_for_a_user_it_creates(
    tmp_path: Path,
) -> None:
    path = tmp_path / "accounts.db"
    key = issue_key()
    with sqlite3.connect(path) as conn:
        conn.execute(LEGACY_SCHEMA)
        conn.execute("INSERT INTO keys VALUES (?, 'dev', ?, 1, 0)", (key.key_id, key.secret_hash))
    conn.close()

    store = await SqliteAccountStore.open(path)
    try:
        principal = await store.authenticate(key.text)
        balance = await store.balance("dev")
    finally:
        await store.close()
    reopened = await SqliteAccountStore.open(path)
    try:
        again = await reopened.authenticate(key.text)
    finally:
        await reopened.close()

    assert principal is not None and principal.owner == "dev"
    assert principal.scopes == {Scope.JOBS} and principal.tariff == DEFAULT_TARIFF
    assert balance == Balance("dev", 0, 0)
    assert again == principal
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()
