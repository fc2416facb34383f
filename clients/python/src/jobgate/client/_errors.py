"""Typed errors decoded from the google.rpc.Status that jobgate sends with every failure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.rpc import error_details_pb2, status_pb2

from jobgate.v1 import job_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field, from google.rpc.BadRequest: `field` is its path."""

    field: str
    description: str


@dataclass(frozen=True)
class ErrorDetails:
    """What a google.rpc.Status says beyond code and message: its ErrorInfo, BadRequest and
    RetryInfo."""

    reason: str = ""
    domain: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    field_violations: tuple[FieldViolation, ...] = ()
    retry_delay: float | None = None

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> ErrorDetails:
        info = error_details_pb2.ErrorInfo()
        bad_request = error_details_pb2.BadRequest()
        retry: error_details_pb2.RetryInfo | None = None
        for detail in status.details:
            if detail.Is(info.DESCRIPTOR):
                detail.Unpack(info)
            elif detail.Is(bad_request.DESCRIPTOR):
                detail.Unpack(bad_request)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
        violations = tuple(
            FieldViolation(v.field, v.description) for v in bad_request.field_violations
        )
        delay = retry.retry_delay.ToTimedelta().total_seconds() if retry is not None else None
        return cls(info.reason, info.domain, dict(info.metadata), violations, delay)


class JobgateError(Exception):
    """The root of the client's errors: a failed call (or job), decoded from google.rpc.Status.

    `reason` is the stable UPPER_SNAKE google.rpc.ErrorInfo reason (empty when the server sent
    none, e.g. when the connection failed); `field_violations` name the invalid fields;
    `retry_delay` is how many seconds the server asked to wait before trying again (a
    google.rpc.RetryInfo, sent with RESOURCE_EXHAUSTED), or None."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        details: ErrorDetails | None = None,
    ) -> None:
        super().__init__(message)
        details = details or ErrorDetails()
        self.code = code
        self.message = message
        self.reason = details.reason
        self.domain = details.domain
        self.metadata = dict(details.metadata)
        self.field_violations = details.field_violations
        self.retry_delay = details.retry_delay

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"


class InvalidArgumentError(JobgateError):
    """A request field is missing or invalid (see `field_violations`), or the model is unknown."""


class NotFoundError(JobgateError):
    """No job of the caller has this name."""


class UnauthenticatedError(JobgateError):
    """The API key is missing, unknown or revoked."""


class PermissionDeniedError(JobgateError):
    """The API key may not do this."""


class FailedPreconditionError(JobgateError):
    """The call cannot be done in the current state: cancelling a finished job, or a balance
    that does not cover a job (reason INSUFFICIENT_BALANCE)."""


class AlreadyExistsError(JobgateError):
    """The request collides with an existing one, e.g. a request_id reused for another job."""


class ResourceExhaustedError(JobgateError):
    """A limit was hit: request size, or the tariff's concurrency or submit rate (reasons
    CONCURRENCY_LIMIT, RATE_LIMIT), with `retry_delay` saying when to try again."""


class UnavailableError(JobgateError):
    """The service could not be reached or is shutting down; retrying later may succeed."""


class DeadlineExceededError(JobgateError):
    """The call (or the wait for a job) ran out of time."""


class JobFailedError(JobgateError):
    """Raised by `result()` when the job ended FAILED or CANCELLED; `job` is the final job and
    code, message and reason come from `job.error`."""

    def __init__(self, job: job_pb2.Job) -> None:
        status = job.error
        code = code_of(status.code)
        state = job_pb2.Job.State.Name(job.state).removeprefix("STATE_")
        message = status.message or f"job {job.name} ended {state}"
        super().__init__(code, message, ErrorDetails.from_status(status))
        self.job = job


_ERRORS_BY_CODE: dict[grpc.StatusCode, type[JobgateError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


class RpcFailure(Protocol):
    """What grpc.RpcError (sync) and grpc.aio.AioRpcError both offer about a failed call."""

    def code(self) -> grpc.StatusCode: ...

    def details(self) -> str | None: ...

    def trailing_metadata(self) -> Any: ...


def error_for(
    code: grpc.StatusCode, message: str, details: ErrorDetails | None = None
) -> JobgateError:
    """The typed error for `code`; codes without a class of their own give a JobgateError."""
    return _ERRORS_BY_CODE.get(code, JobgateError)(code, message, details)


def code_of(number: int) -> grpc.StatusCode:
    """The gRPC code a google.rpc.Status carries as a number."""
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def status_error(status: status_pb2.Status) -> JobgateError:
    """The typed error a google.rpc.Status stands for, e.g. a job's error."""
    return error_for(code_of(status.code), status.message, ErrorDetails.from_status(status))


def from_rpc_error(error: RpcFailure) -> JobgateError:
    """Decodes a failed call: the rich status from trailing metadata when the server sent one,
    else the bare code and details (e.g. a connection failure inside the client)."""
    code = error.code()
    fallback = error.details() or code.name
    status = _rich_status(error.trailing_metadata())
    if status is None:
        return error_for(code, fallback)
    return error_for(code, status.message or fallback, ErrorDetails.from_status(status))


def _rich_status(metadata: Iterable[tuple[str, Any]] | None) -> status_pb2.Status | None:
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None
