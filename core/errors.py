"""The errors of jobgate's domain, each with a stable reason the API reports as it is."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Stable machine-readable reasons; the same names as the proto's ErrorReason, unprefixed."""

    API_KEY_MISSING = "API_KEY_MISSING"
    API_KEY_INVALID = "API_KEY_INVALID"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    BLOB_NOT_FOUND = "BLOB_NOT_FOUND"
    JOB_FINISHED = "JOB_FINISHED"
    REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
    INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    CANCELLED = "CANCELLED"
    INVALID_INPUT = "INVALID_INPUT"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    REQUESTED_FAILURE = "REQUESTED_FAILURE"
    INTERNAL = "INTERNAL"
    QUEUE_UNAVAILABLE = "QUEUE_UNAVAILABLE"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_TIMEOUT = "PROVIDER_TIMEOUT"
    CONTENT_POLICY = "CONTENT_POLICY"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    MODEL_NOT_CONFIGURED = "MODEL_NOT_CONFIGURED"
    API_KEY_SCOPE_MISSING = "API_KEY_SCOPE_MISSING"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    CONCURRENCY_LIMIT = "CONCURRENCY_LIMIT"
    RATE_LIMIT = "RATE_LIMIT"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    TARIFF_NOT_FOUND = "TARIFF_NOT_FOUND"
    API_KEY_NOT_FOUND = "API_KEY_NOT_FOUND"
    USER_ALREADY_EXISTS = "USER_ALREADY_EXISTS"
    NOTHING_TO_REFUND = "NOTHING_TO_REFUND"


class JobgateError(Exception):
    """The root of jobgate's errors; `reason` says which one, `message` says it for people."""

    reason: Reason = Reason.INTERNAL

    def __init__(self, message: str, *, reason: Reason | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(JobgateError):
    """A request field is missing or wrong; `field` is its path, e.g. `job.input.prompt`."""

    reason = Reason.INVALID_ARGUMENT

    def __init__(self, field: str, message: str, *, reason: Reason | None = None) -> None:
        super().__init__(message, reason=reason)
        self.field = field


class NotFound(JobgateError):
    """The named thing does not exist, or belongs to someone else."""

    reason = Reason.JOB_NOT_FOUND


class FailedPrecondition(JobgateError):
    """The request is valid but the resource is in the wrong state for it."""

    reason = Reason.JOB_FINISHED


class AlreadyExists(JobgateError):
    """The request collides with an existing resource."""

    reason = Reason.REQUEST_ID_REUSED


class Unauthenticated(JobgateError):
    """The caller did not prove who it is."""

    reason = Reason.API_KEY_INVALID


class PermissionDenied(JobgateError):
    """The caller is known but may not do this."""

    reason = Reason.API_KEY_SCOPE_MISSING


class ResourceExhausted(JobgateError):
    """Over a limit for now; trying again after `retry_after` seconds may succeed."""

    reason = Reason.RATE_LIMIT

    def __init__(self, message: str, *, retry_after: float, reason: Reason | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class ConfigError(JobgateError):
    """A setting is missing, malformed or names a backend that cannot be reached."""

    reason = Reason.INTERNAL
