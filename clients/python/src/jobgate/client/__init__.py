"""The Python clients of jobgate's JobService, AccountService and AdminService; `jobgate`
re-exports what users need."""

from __future__ import annotations

from jobgate.client._admin import AdminClient, AsyncAdminClient, ModelPrice
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
    "AdminClient",
    "AlreadyExistsError",
    "AsyncAdminClient",
    "AsyncJobClient",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InvalidArgumentError",
    "JobClient",
    "JobFailedError",
    "JobgateError",
    "ModelPrice",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "UnauthenticatedError",
    "UnavailableError",
]
