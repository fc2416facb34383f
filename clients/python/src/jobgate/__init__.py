"""jobgate: submit long AI jobs over gRPC and watch them to the end.

    from jobgate import JobClient

    with JobClient("localhost:50051", api_key) as client:
        job = client.submit("local/echo", "hello")
        print(client.result(job.name).outputs)

`AsyncJobClient` is the same for asyncio; both also show the caller's `balance()` and `usage()`.
`AdminClient` and `AsyncAdminClient` manage users, keys, tariffs and balances with an admin key.
Failures raise `JobgateError` subclasses. The messages are jobgate.v1's protobufs, re-exported
here under short names.
"""

from __future__ import annotations

from jobgate.client import (
    AdminClient,
    AlreadyExistsError,
    AsyncAdminClient,
    AsyncJobClient,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    JobClient,
    JobFailedError,
    JobgateError,
    ModelPrice,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RetryPolicy,
    UnauthenticatedError,
    UnavailableError,
)
from jobgate.v1.account_pb2 import Balance, UsageRecord
from jobgate.v1.job_pb2 import BlobRef, Job, JobEvent, JobInput, LogEntry, Output, Progress
from jobgate.v1.job_service_pb2 import WatchJobResponse
from jobgate.v1.model_pb2 import Model

JobState = Job.State

__all__ = [
    "AdminClient",
    "AlreadyExistsError",
    "AsyncAdminClient",
    "AsyncJobClient",
    "Balance",
    "BlobRef",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InvalidArgumentError",
    "Job",
    "JobClient",
    "JobEvent",
    "JobFailedError",
    "JobInput",
    "JobState",
    "JobgateError",
    "LogEntry",
    "Model",
    "ModelPrice",
    "NotFoundError",
    "Output",
    "PermissionDeniedError",
    "Progress",
    "ResourceExhaustedError",
    "RetryPolicy",
    "UnauthenticatedError",
    "UnavailableError",
    "UsageRecord",
    "WatchJobResponse",
]
