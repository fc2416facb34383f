"""ListJobs and ListModels paging: the filter language, page sizes and opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime

from core.errors import InvalidArgument, Reason
from core.jobs import JobState

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

FILTER_HELP = 'use `state = RUNNING`, `model = "local/echo"`, or both joined by AND'
_TERM = re.compile(r'\s*([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|([^\s"]+))\s*')
_AND = re.compile(r"\s+AND\s+")


@dataclass(frozen=True)
class JobFilter:
    state: JobState | None = None
    model: str | None = None

    def digest(self) -> str:
        """Identifies the filter's meaning, so a page token cannot be replayed on another."""
        body = json.dumps([self.state, self.model])
        return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cursor:
    """The last job of a page: the next page starts right after it (newest first)."""

    create_time: datetime
    job_id: str


def parse_filter(text: str) -> JobFilter:
    """Parses the AIP-160 subset ListJobs takes; InvalidArgument on field `filter` otherwise."""
    if not text.strip():
        return JobFilter()
    values: dict[str, str] = {}
    for term in _AND.split(text.strip()):
        match = _TERM.fullmatch(term)
        if match is None:
            raise InvalidArgument("filter", f"cannot read {term.strip()!r}: {FILTER_HELP}")
        name, quoted, bare = match.groups()
        if name not in ("state", "model"):
            raise InvalidArgument("filter", f"cannot filter on {name!r}: {FILTER_HELP}")
        if name in values:
            raise InvalidArgument("filter", f"{name!r} appears twice: {FILTER_HELP}")
        values[name] = quoted if quoted is not None else bare
    return JobFilter(
        state=_state(values["state"]) if "state" in values else None, model=values.get("model")
    )


def _state(text: str) -> JobState:
    name = text.upper().removeprefix("STATE_")
    try:
        return JobState(name)
    except ValueError:
        known = ", ".join(s.value for s in JobState)
        raise InvalidArgument("filter", f"unknown state {text!r}: use one of {known}") from None


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE) -> int:
    if requested < 0:
        raise InvalidArgument("page_size", "page_size must not be negative")
    if requested == 0:
        return default
    return min(requested, MAX_PAGE_SIZE)


def encode_job_token(cursor: Cursor, job_filter: JobFilter) -> str:
    body = {"t": cursor.create_time.isoformat(), "id": cursor.job_id, "f": job_filter.digest()}
    return _encode(body)


def decode_job_token(token: str, job_filter: JobFilter) -> Cursor | None:
    """The cursor in `token` (None for the first page); INVALID_PAGE_TOKEN if it is malformed
    or was issued for another filter."""
    if not token:
        return None
    body = _decode(token)
    try:
        digest, cursor = body["f"], Cursor(datetime.fromisoformat(str(body["t"])), str(body["id"]))
    except (KeyError, TypeError, ValueError):
        raise _bad_token("page_token is malformed") from None
    if digest != job_filter.digest():
        raise _bad_token("page_token was issued for a different filter")
    return cursor


def encode_offset_token(offset: int) -> str:
    return _encode({"o": offset})


def decode_offset_token(token: str, total: int) -> int:
    """The offset in `token` (0 for the first page), checked against the list's length."""
    if not token:
        return 0
    offset = _decode(token).get("o")
    if not isinstance(offset, int) or not 0 < offset <= total:
        raise _bad_token("page_token is malformed")
    return offset


def _encode(body: dict[str, object]) -> str:
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str) -> dict[str, object]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _bad_token("page_token is malformed") from None
    if not isinstance(body, dict):
        raise _bad_token("page_token is malformed")
    return body


def _bad_token(message: str) -> InvalidArgument:
    return InvalidArgument("page_token", message, reason=Reason.INVALID_PAGE_TOKEN)
