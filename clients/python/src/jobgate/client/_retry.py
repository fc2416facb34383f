"""When and how long the clients wait before trying a failed call again."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from jobgate.client._errors import JobgateError, UnavailableError


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of calls the service could not take (UNAVAILABLE): exponential backoff with
    jitter, at most `max_attempts` tries in a row. A watch counts its tries per outage."""

    max_attempts: int = 6
    initial_backoff: float = 0.1
    max_backoff: float = 3.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("backoffs must satisfy 0 <= initial_backoff <= max_backoff")

    def delay(self, failures: int) -> float:
        """The pause after `failures` failures in a row; jitter keeps clients from retrying in
        lockstep after a shared outage."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (failures - 1))
        return random.uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)


class Deadline:
    """An overall time limit across several calls; `None` means none."""

    def __init__(self, timeout: float | None) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - time.monotonic())


class Backoff:
    """Counts one call's failures in a row and says how long to pause before the next try."""

    def __init__(self, policy: RetryPolicy, deadline: Deadline | None = None) -> None:
        self._policy = policy
        self._deadline = deadline or Deadline(None)
        self._failures = 0

    def reset(self) -> None:
        """The call got through: a later outage gets the full number of tries again."""
        self._failures = 0

    def pause_after(self, error: JobgateError) -> float:
        """The pause before trying again; raises `error` when another try is pointless: it is
        not UNAVAILABLE, the tries are used up, or the deadline would pass while pausing."""
        if not isinstance(error, UnavailableError):
            raise error
        self._failures += 1
        if self._failures >= self._policy.max_attempts:
            raise error
        delay = self._policy.delay(self._failures)
        remaining = self._deadline.remaining()
        if remaining is not None and remaining <= delay:
            raise error
        return delay
