"""The Python clients of jobgate's JobService; `jobgate` re-exports what users need."""

from __future__ import annotations

from jobgate.client._async_client import AsyncJobClient
from jobgate.client._errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    JobFailedError,
    JobgateError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from jobgate.client._retry import RetryPolicy
from jobgate.client._sync_client import JobClient

__all__ = [
    "AlreadyExistsError",
    "AsyncJobClient",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InvalidArgumentError",
    "JobClient",
    "JobFailedError",
    "JobgateError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "UnauthenticatedError",
    "UnavailableError",
]
