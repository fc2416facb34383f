"""When a job whose provider failed unexpectedly runs again: exponential backoff with jitter, up
to a number of attempts."""

from __future__ import annotations

import random
from dataclasses import dataclass

from core.settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` counts every attempt, the first included: 1 means never retry."""

    max_attempts: int = 5
    base_seconds: float = 2.0
    max_delay_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.base_seconds <= 0 or self.max_delay_seconds <= 0:
            raise ValueError("retry delays must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            base_seconds=settings.retry_base_seconds,
            max_delay_seconds=settings.retry_max_seconds,
        )

    def retries_after(self, attempt: int) -> bool:
        return attempt < self.max_attempts

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed `attempt` (1 for the first): the exponential ceiling
        base * 2^(attempt-1), capped, of which a random half is waited out ("equal jitter"),
        so jobs that failed together do not all come back at once."""
        ceiling = min(self.max_delay_seconds, self.base_seconds * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


NO_RETRIES = RetryPolicy(max_attempts=1)
