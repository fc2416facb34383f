"""What every HTTP provider adapter shares: timeouts, retries of transient errors honouring
Retry-After, a circuit breaker per provider, errors mapped to stable reasons, secrets scrubbed
from every message, downloads of outputs, and polling of tasks.

An adapter module holds only what is its provider's own: auth headers, request and response
shapes, and how its error bodies say what went wrong (`classify`).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from core.errors import Reason
from core.providers.base import JobFailed, ProviderUnavailable

REDACTED = "[redacted]"
# Provider error texts end up in Job.error: long enough to help, short enough to read.
MAX_ERROR_CHARS = 500

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
# A provider's reading of one of its error responses: the final error it means, or None for the
# default reading by status (429 and 5xx transient, 401/403 credentials, other 4xx bad input).
Classify = Callable[[httpx.Response, str], JobFailed | None]
T = TypeVar("T")


@dataclass(frozen=True)
class HttpPolicy:
    """How hard one adapter tries. The defaults suit public APIs; tests shrink the waits."""

    timeout_seconds: float = 60.0
    retries: int = 3  # more tries of one call after a transient failure
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 20.0
    # A Retry-After longer than this ends the attempt instead of holding a worker slot: the job
    # comes back after it (ProviderUnavailable.retry_after).
    max_inline_wait_seconds: float = 30.0
    breaker_failures: int = 5  # consecutive transient failures that open the circuit
    breaker_cooldown_seconds: float = 30.0
    poll_interval_seconds: float = 5.0
    max_download_bytes: int = 512 * 1024 * 1024


class CircuitBreaker:
    """Opens after `failures` consecutive transient failures and stays open `cooldown` seconds,
    during which calls fail at once without reaching the provider. Then it lets calls through
    (half open): a success closes it, a failure opens it again for another cooldown."""

    def __init__(self, failures: int, cooldown: float, clock: Clock = time.monotonic) -> None:
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0

    def open_for(self) -> float:
        """Seconds until calls may go through again; 0 when they may now."""
        return max(0.0, self._open_until - self._clock())

    def succeeded(self) -> None:
        self._failures = 0
        self._open_until = 0.0

    def failed(self) -> None:
        self._failures += 1
        if self._failures >= self._threshold:
            self._open_until = self._clock() + self._cooldown


class Scrubber:
    """Takes every secret (API keys, and tokens made from them) out of text bound for a job's
    error, a log line or an exception."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = {s for s in secrets if s}

    def add(self, secret: str) -> None:
        if secret:
            self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        # Longest first, so a secret containing another is removed whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text


def error_text(response: httpx.Response) -> str:
    """What an error response says, from the shapes providers use: `{"error": {"message"}}`
    (OpenAI, Gemini), `{"message"}` (Kling), `{"detail"}` (Replicate), `{"errors": [...]}`
    (Stability); else the start of the body."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:MAX_ERROR_CHARS]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        for key in ("message", "detail", "title"):
            if body.get(key):
                return str(body[key])
        if isinstance(body.get("errors"), list) and body["errors"]:
            return "; ".join(str(e) for e in body["errors"])
    return response.text[:MAX_ERROR_CHARS]


def retry_after(response: httpx.Response) -> float:
    """Retry-After in seconds (a number or an HTTP date); 0 when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


class ProviderApi:
    """One provider's HTTP API: `session()` opens a client for one job's calls."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        auth: Callable[[], dict[str, str]],
        secrets: Iterable[str],
        policy: HttpPolicy,
        classify: Classify | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.policy = policy
        self.scrub = Scrubber(secrets)
        self.breaker = CircuitBreaker(
            policy.breaker_failures, policy.breaker_cooldown_seconds, clock
        )
        self.sleep = sleep
        self._base_url = base_url.rstrip("/")
        self._auth = auth
        self._classify = classify

    @asynccontextmanager
    async def session(self) -> AsyncIterator[ApiSession]:
        # One client per job: its connections serve the job's submit, polls and downloads.
        timeout = httpx.Timeout(self.policy.timeout_seconds)
        async with httpx.AsyncClient(base_url=self._base_url, timeout=timeout) as client:
            yield ApiSession(self, client)

    def auth_headers(self) -> dict[str, str]:
        headers = self._auth()
        for value in headers.values():
            # The header values carry the key itself, or a token made from it (Kling's JWT).
            self.scrub.add(value.removeprefix("Bearer ").strip())
        return headers

    def classify(self, response: httpx.Response) -> JobFailed | None:
        """The final error a non-2xx response means, or None when it is transient."""
        text = self.scrub(error_text(response))
        if self._classify is not None and (error := self._classify(response, text)) is not None:
            return error
        status = response.status_code
        if status == 429 or status == 408 or status >= 500:
            return None
        if status in (401, 403):
            return JobFailed(f"{self.name} refused jobgate's credentials (HTTP {status}): {text}")
        if status == 402:
            return JobFailed(f"{self.name}: {text}", reason=Reason.QUOTA_EXCEEDED)
        return JobFailed(
            f"{self.name} rejected the input (HTTP {status}): {text}", reason=Reason.INVALID_INPUT
        )


class ApiSession:
    """The calls of one job on one provider."""

    def __init__(self, api: ProviderApi, client: httpx.AsyncClient) -> None:
        self._api = api
        self._client = client

    async def request(
        self, method: str, url: str, *, authorized: bool = True, **options: Any
    ) -> httpx.Response:
        """The 2xx response to one call, retried while transient. Raises JobFailed for an error
        the provider means, ProviderUnavailable when it stays unavailable (or its circuit is
        open). `url` is a path under the base URL, or absolute (a provider's file URL, fetched
        without credentials unless `authorized`)."""
        api, policy = self._api, self._api.policy
        extra_headers = dict(options.pop("headers", None) or {})
        last = ""
        wait = 0.0
        reason = Reason.PROVIDER_UNAVAILABLE
        for attempt in range(policy.retries + 1):
            if (open_for := api.breaker.open_for()) > 0:
                raise ProviderUnavailable(
                    f"{api.name} is unavailable (circuit open for {open_for:.0f} s)"
                    + (f": {last}" if last else ""),
                    retry_after=open_for,
                )
            # Fresh auth each try: a token (Kling's JWT) may have expired during the backoff.
            headers = {**extra_headers, **(api.auth_headers() if authorized else {})}
            try:
                response = await self._client.request(method, url, headers=headers, **options)
            except httpx.TimeoutException:
                reason, wait = Reason.PROVIDER_TIMEOUT, 0.0
                last = f"no answer within {policy.timeout_seconds:g} s"
            except httpx.TransportError as error:
                reason, wait = Reason.PROVIDER_UNAVAILABLE, 0.0
                last = api.scrub(f"cannot reach it: {type(error).__name__}: {error}")
            else:
                if response.is_success:
                    api.breaker.succeeded()
                    return response
                final = api.classify(response)
                if final is not None:
                    # The provider is up and answered: not a failure of its availability.
                    api.breaker.succeeded()
                    raise final
                reason, wait = Reason.PROVIDER_UNAVAILABLE, retry_after(response)
                last = f"HTTP {response.status_code}: {api.scrub(error_text(response))}"
            api.breaker.failed()
            if attempt == policy.retries or wait > policy.max_inline_wait_seconds:
                break
            backoff = min(policy.backoff_max_seconds, policy.backoff_seconds * 2**attempt)
            await api.sleep(max(wait, backoff))
        # Come back no sooner than the provider asked, nor while its circuit is open.
        raise ProviderUnavailable(
            f"{api.name} is unavailable: {last}",
            retry_after=max(wait, api.breaker.open_for()),
            reason=reason,
        )

    async def json(self, method: str, url: str, **options: Any) -> Any:
        response = await self.request(method, url, **options)
        try:
            return response.json()
        except ValueError:
            raise ProviderUnavailable(
                f"{self._api.name} answered {method} {url} with a body that is not JSON"
            ) from None

    async def download(self, url: str, *, authorized: bool = False) -> tuple[bytes, str]:
        """An output's bytes and media type, from the provider's (usually signed) URL."""
        response = await self.request("GET", url, authorized=authorized)
        data = response.content
        if len(data) > self._api.policy.max_download_bytes:
            raise JobFailed(
                f"{self._api.name} returned an output over "
                f"{self._api.policy.max_download_bytes} bytes"
            )
        content_type = response.headers.get("content-type", "application/octet-stream")
        return data, content_type.split(";", 1)[0].strip()


async def poll(
    api: ProviderApi,
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    deadline_seconds: float,
    on_update: Callable[[T], Awaitable[None]] | None = None,
    clock: Clock = time.monotonic,
) -> T:
    """Fetches a task until `done`, every poll interval; reports each state to `on_update`.
    A task still unfinished after `deadline_seconds` ends the job PROVIDER_TIMEOUT."""
    give_up = clock() + deadline_seconds
    while True:
        state = await fetch()
        if on_update is not None:
            await on_update(state)
        if done(state):
            return state
        if clock() >= give_up:
            raise JobFailed(
                f"{api.name}'s task did not finish within {deadline_seconds:g} s",
                reason=Reason.PROVIDER_TIMEOUT,
            )
        await api.sleep(api.policy.poll_interval_seconds)


def thousands(tokens: int) -> int:
    """Tokens in THOUSAND_TOKENS price units, any part of a thousand counted whole."""
    return math.ceil(max(0, tokens) / 1000)
