"""API keys as every account store keeps them: `jg_<key_id>_<secret>`, stored only as hashes.

The key_id is public (it finds the row and may be shown or logged); the secret is random, seen
once at creation, and checked by comparing hashes in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass

from core.billing import Scope

KEY_PREFIX = "jg_"
MAX_KEY_LENGTH = 200
_KEY_ID = re.compile(r"[0-9a-f]{12}")
# Compared against when the key_id is unknown, so that case costs the same as a wrong secret.
NO_HASH = "0" * 64


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    secret: str


@dataclass(frozen=True)
class IssuedKey:
    """A new key: `text` goes to its owner once, `secret_hash` to the store."""

    key_id: str
    text: str
    secret_hash: str


def parse_key(api_key: str) -> ParsedKey | None:
    """The parts of a well-formed key, or None."""
    if len(api_key) > MAX_KEY_LENGTH or not api_key.startswith(KEY_PREFIX):
        return None
    key_id, _, secret = api_key[len(KEY_PREFIX) :].partition("_")
    if not _KEY_ID.fullmatch(key_id) or not secret:
        return None
    return ParsedKey(key_id, secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(stored_hash: str, secret: str) -> bool:
    """Whether `secret` hashes to `stored_hash`, compared in constant time."""
    return hmac.compare_digest(stored_hash.encode(), hash_secret(secret).encode())


def issue_key() -> IssuedKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return IssuedKey(key_id, f"{KEY_PREFIX}{key_id}_{secret}", hash_secret(secret))


def scopes_text(scopes: Collection[Scope]) -> str:
    """Scopes as the stores keep them: sorted names, space-separated. ValueError for none."""
    if not scopes:
        raise ValueError("an API key needs at least one scope")
    return " ".join(sorted(Scope(s).value for s in scopes))


def scopes_from_text(text: str) -> frozenset[Scope]:
    return frozenset(Scope(name) for name in text.split())
