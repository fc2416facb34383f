"""jobgate's errors as gRPC statuses callers can act on (AIP-193).

Every failed RPC carries a canonical code, a message for people and, in the
`grpc-status-details-bin` trailer, a google.rpc.Status whose details hold one ErrorInfo (a stable
reason) and, for a bad field, a BadRequest naming it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    JobgateError,
    NotFound,
    PermissionDenied,
    Reason,
    ResourceExhausted,
    Unauthenticated,
)
from core.jobs import JobError

log = logging.getLogger(__name__)

DOMAIN = "jobgate.dev"
DETAILS_KEY = "grpc-status-details-bin"


class Unavailable(JobgateError):
    """The service cannot take the call right now; a retry (maybe elsewhere) can succeed."""

    reason = Reason.SHUTTING_DOWN


_CODE_OF_CLASS: tuple[tuple[type[JobgateError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
)

# The catalog reports an unknown model as NotFound, but for the caller it is a bad Job.model.
_FIELD_OF_REASON = {Reason.UNKNOWN_MODEL: "job.model"}

_CODE_OF_JOB_REASON = {
    Reason.CANCELLED: grpc.StatusCode.CANCELLED,
    Reason.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.PROVIDER_ERROR: grpc.StatusCode.UNAVAILABLE,
    Reason.REQUESTED_FAILURE: grpc.StatusCode.ABORTED,
    Reason.PROVIDER_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Reason.PROVIDER_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    Reason.CONTENT_POLICY: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.QUOTA_EXCEEDED: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@dataclass(frozen=True)
class RpcStatus:
    """What an aborted RPC sends: the code and message, and the same again with details."""

    code: grpc.StatusCode
    message: str
    details: status_pb2.Status

    @property
    def trailing_metadata(self) -> tuple[tuple[str, bytes]]:
        return ((DETAILS_KEY, self.details.SerializeToString()),)


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: Reason,
    field: str | None = None,
    retry_after: float | None = None,
) -> status_pb2.Status:
    """A google.rpc.Status with an ErrorInfo and, when `field` is given, a BadRequest; with
    `retry_after` (seconds), a RetryInfo saying how long to wait before trying again."""
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason.value, domain=DOMAIN))
    if field is not None:
        bad_request = error_details_pb2.BadRequest()
        bad_request.field_violations.add(field=field, description=message)
        status.details.add().Pack(bad_request)
    if retry_after is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(max(1, round(retry_after * 1000)))
        status.details.add().Pack(retry)
    return status


def status_of(error: BaseException) -> RpcStatus:
    """The status reporting `error`. Unexpected errors are logged here with their traceback and
    reported as INTERNAL with an incident id: their text may hold internals, never sent."""
    if isinstance(error, JobgateError):
        field = _FIELD_OF_REASON.get(error.reason)
        if field is not None:
            return _rpc_status(grpc.StatusCode.INVALID_ARGUMENT, error.message, error.reason, field)
        for kind, code in _CODE_OF_CLASS:
            if isinstance(error, kind):
                field = error.field if isinstance(error, InvalidArgument) else None
                retry = error.retry_after if isinstance(error, ResourceExhausted) else None
                return _rpc_status(code, error.message, error.reason, field, retry)
    incident = secrets.token_hex(6)
    log.error("internal error, incident %s", incident, exc_info=error)
    message = f"internal error (incident {incident})"
    return _rpc_status(grpc.StatusCode.INTERNAL, message, Reason.INTERNAL)


def _rpc_status(
    code: grpc.StatusCode,
    message: str,
    reason: Reason,
    field: str | None = None,
    retry_after: float | None = None,
) -> RpcStatus:
    return RpcStatus(code, message, rich_status(code, message, reason, field, retry_after))


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> NoReturn:
    status = status_of(error)
    await context.abort(status.code, status.message, status.trailing_metadata)
    raise AssertionError("context.abort returned")  # it always raises


def job_error_status(error: JobError) -> status_pb2.Status:
    """Job.error and StateChange.error: why a job failed or was cancelled."""
    code = _CODE_OF_JOB_REASON.get(error.reason, grpc.StatusCode.UNKNOWN)
    return rich_status(code, error.message, error.reason)


Request = TypeVar("Request")
Response = TypeVar("Response")
Servicer = TypeVar("Servicer")
UnaryMethod = Callable[[Servicer, Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[Response]]
StreamMethod = Callable[
    [Servicer, Request, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Response]
]


def unary_errors(
    method: UnaryMethod[Servicer, Request, Response],
) -> UnaryMethod[Servicer, Request, Response]:
    """Reports whatever a unary servicer method raises as a rich status."""

    @functools.wraps(method)
    async def wrapper(
        self: Servicer, request: Request, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Response:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort(context, error)

    return wrapper


def stream_errors(
    method: StreamMethod[Servicer, Request, Response],
) -> StreamMethod[Servicer, Request, Response]:
    """Reports whatever a server-streaming servicer method raises as a rich status."""
    if not inspect.isasyncgenfunction(method):
        raise TypeError(f"{method.__qualname__} must be an async generator")

    @functools.wraps(method)
    async def wrapper(
        self: Servicer, request: Request, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Response]:
        try:
            async for response in method(self, request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort(context, error)

    return wrapper
