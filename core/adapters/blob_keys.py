"""Blob keys and content types: which are safe, and the HMAC signatures that grant a download,
or one upload of an exact size and type, until a time."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from pathlib import Path

MAX_KEY_LENGTH = 512
MAX_CONTENT_TYPE_LENGTH = 255
_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")
# type/subtype (RFC 9110 tokens), then parameters in printable ASCII: safe as a header value.
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+/[A-Za-z0-9!#$%&'*+.^_`|~-]+(;[ -~]*)?")
SECRET_BYTES = 32


def validate_key(key: str) -> str:
    """`key` when it is a safe relative blob key; ValueError saying what is wrong otherwise."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"blob key must be 1 to {MAX_KEY_LENGTH} characters, got {len(key)}")
    if not _KEY_CHARS.fullmatch(key):
        raise ValueError(f"blob key {key!r} may hold only letters, digits and . _ / -")
    if key.startswith("/") or ".." in key:
        raise ValueError(f"blob key {key!r} must be relative and must not contain '..'")
    if any(part in ("", ".") for part in key.split("/")):
        raise ValueError(f"blob key {key!r} has an empty or '.' path segment")
    return key


def validate_content_type(content_type: str) -> str:
    """`content_type` when it is a media type like `image/png`; ValueError otherwise."""
    if len(content_type) > MAX_CONTENT_TYPE_LENGTH or not _CONTENT_TYPE.fullmatch(content_type):
        raise ValueError(
            f"content type {content_type[:80]!r} must be a media type like image/png, at most "
            f"{MAX_CONTENT_TYPE_LENGTH} characters"
        )
    return content_type


def sign(secret: bytes, key: str, expires: int) -> str:
    """The HMAC-SHA256 (hex) that lets `key` be downloaded until the unix time `expires`."""
    return hmac.new(secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signature_valid(secret: bytes, key: str, expires: int, signature: str, now: float) -> bool:
    expected = sign(secret, key, expires)
    # Compare first, in constant time, whatever the expiry: timing says nothing about the key.
    matches = hmac.compare_digest(expected.encode(), signature.encode())
    return matches and now <= expires


def sign_upload(secret: bytes, key: str, expires: int, size: int, content_type: str) -> str:
    """The HMAC-SHA256 (hex) that lets one upload of exactly `size` bytes of `content_type` be
    stored at `key` until `expires`. Keys hold no newline, so it never equals a download's."""
    message = f"PUT\n{key}\n{expires}\n{size}\n{content_type}"
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def upload_signature_valid(
    secret: bytes, key: str, expires: int, size: int, content_type: str, signature: str, now: float
) -> bool:
    expected = sign_upload(secret, key, expires, size, content_type)
    matches = hmac.compare_digest(expected.encode(), signature.encode())
    return matches and now <= expires


def load_or_create_secret(path: Path) -> bytes:
    """The secret stored at `path`, created (mode 0600) on first use and reused after.

    Processes starting together agree on one secret: it is written whole to a file of its own,
    then linked into place, which fails for all but the first, so none reads a half-written one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        secret = secrets.token_bytes(SECRET_BYTES)
        fd, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secret.hex())
            os.link(draft, path)
            return secret
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    text = path.read_text().strip()
    if len(text) < 2 * SECRET_BYTES:
        raise ValueError(f"{path} holds no usable secret; delete it to make a new one")
    return bytes.fromhex(text)
