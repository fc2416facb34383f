"""The names `jobgate` promises its users, and the pieces behind them that need no service:
error decoding and request building."""

from __future__ import annotations

from datetime import timedelta

import grpc
import jobgate
import pytest
from google.rpc import error_details_pb2, status_pb2
from jobgate.client._errors import STATUS_DETAILS_KEY, from_rpc_error
from jobgate.client._messages import JobSpec, create_job, job_name, jobs_filter


def test_the_public_names_are_pinned() -> None:
    assert sorted(jobgate.__all__) == [
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
    assert all(hasattr(jobgate, name) for name in jobgate.__all__)


def test_job_state_is_the_protos_enum() -> None:
    assert jobgate.JobState is jobgate.Job.State
    assert jobgate.JobState.Name(jobgate.JobState.STATE_RUNNING) == "STATE_RUNNING"


def test_every_typed_error_is_a_jobgate_error() -> None:
    for name in jobgate.__all__:
        if name.endswith("Error"):
            assert issubclass(getattr(jobgate, name), jobgate.JobgateError)


class FailedCall:
    """What a failed call looks like to the client: grpc's own RpcError interface."""

    def __init__(
        self, code: grpc.StatusCode, details: str, status: status_pb2.Status | None
    ) -> None:
        self._code, self._details = code, details
        self._metadata = (
            () if status is None else ((STATUS_DETAILS_KEY, status.SerializeToString()),)
        )

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._metadata


def rich_status(
    code: grpc.StatusCode, message: str, reason: str, field: str = ""
) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=reason, domain="jobgate.dev", metadata={"k": "v"})
    )
    if field:
        bad_request = error_details_pb2.BadRequest()
        bad_request.field_violations.add(field=field, description="no such model")
        status.details.add().Pack(bad_request)
    return status


def test_a_rich_status_decodes_into_a_typed_error_with_reason_and_fields() -> None:
    code = grpc.StatusCode.INVALID_ARGUMENT
    status = rich_status(code, "unknown model x/y", "UNKNOWN_MODEL", field="job.model")

    error = from_rpc_error(FailedCall(code, "unknown model x/y", status))

    assert isinstance(error, jobgate.InvalidArgumentError)
    assert (error.code, error.message, error.reason) == (code, "unknown model x/y", "UNKNOWN_MODEL")
    assert (error.domain, error.metadata) == ("jobgate.dev", {"k": "v"})
    assert error.field_violations == (jobgate.FieldViolation("job.model", "no such model"),)
    assert str(error) == "INVALID_ARGUMENT (UNKNOWN_MODEL): unknown model x/y"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.NOT_FOUND, jobgate.NotFoundError),
        (grpc.StatusCode.UNAUTHENTICATED, jobgate.UnauthenticatedError),
        (grpc.StatusCode.PERMISSION_DENIED, jobgate.PermissionDeniedError),
        (grpc.StatusCode.FAILED_PRECONDITION, jobgate.FailedPreconditionError),
        (grpc.StatusCode.ALREADY_EXISTS, jobgate.AlreadyExistsError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, jobgate.ResourceExhaustedError),
        (grpc.StatusCode.UNAVAILABLE, jobgate.UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, jobgate.DeadlineExceededError),
        (grpc.StatusCode.INTERNAL, jobgate.JobgateError),
        (grpc.StatusCode.UNKNOWN, jobgate.JobgateError),
    ],
)
def test_each_code_decodes_to_its_error_class(
    code: grpc.StatusCode, kind: type[jobgate.JobgateError]
) -> None:
    error = from_rpc_error(FailedCall(code, "boom", None))

    assert type(error) is kind
    assert (error.code, error.message, error.reason, error.field_violations) == (
        code,
        "boom",
        "",
        (),
    )
    assert str(error) == f"{code.name}: boom"


def test_a_failed_job_becomes_job_failed_error_from_its_status() -> None:
    status = rich_status(grpc.StatusCode.ABORTED, "asked to fail", "REQUESTED_FAILURE")
    job = jobgate.Job(name="jobs/x", state=jobgate.JobState.STATE_FAILED, error=status)

    error = jobgate.JobFailedError(job)

    assert error.job is job
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "REQUESTED_FAILURE")
    assert str(error) == "ABORTED (REQUESTED_FAILURE): asked to fail"


def test_names_accept_ids_and_refuse_an_empty_one() -> None:
    assert job_name("abc") == "jobs/abc"
    assert job_name("jobs/abc") == "jobs/abc"
    with pytest.raises(ValueError, match="job name or id is required"):
        job_name("")


def test_a_submit_without_request_id_gets_a_fresh_uuid() -> None:
    spec = JobSpec("local/echo", "hi")

    first, second = create_job(spec, None), create_job(spec, None)

    assert len(first.request_id) == 36 and first.request_id != second.request_id
    assert create_job(spec, "mine").request_id == "mine"


def test_submit_arguments_fill_the_typed_input() -> None:
    spec = JobSpec(
        "local/image",
        "a fox",
        negative_prompt="blur",
        files=("blob-1", jobgate.BlobRef(key="blob-2")),
        size="64x64",
        aspect_ratio="1:1",
        duration=timedelta(seconds=1.5),
        seed=0,
        options={"steps": 3},
    )

    job = create_job(spec, "r").job

    assert job.model == "local/image"
    assert [f.key for f in job.input.files] == ["blob-1", "blob-2"]
    assert job.input.duration.ToTimedelta() == timedelta(seconds=1.5)
    assert job.input.HasField("seed") and job.input.seed == 0
    assert job.input.options["steps"] == 3
    assert (job.input.size, job.input.aspect_ratio, job.input.negative_prompt) == (
        "64x64",
        "1:1",
        "blur",
    )


def test_bad_arguments_are_refused_before_any_call() -> None:
    with pytest.raises(ValueError, match="duration must not be negative"):
        create_job(JobSpec("local/sleep", duration=-1), None)
    with pytest.raises(ValueError, match="model is required"):
        create_job(JobSpec(""), None)
    with pytest.raises(ValueError, match="API key is required"):
        jobgate.JobClient("localhost:1", "")


def test_list_filters_follow_the_aip_160_subset() -> None:
    assert jobs_filter(None, None) == ""
    assert jobs_filter("running", None) == "state = RUNNING"
    assert jobs_filter(jobgate.JobState.STATE_FAILED, "local/echo") == (
        'state = FAILED AND model = "local/echo"'
    )


def test_a_retry_info_becomes_the_errors_retry_delay() -> None:
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rich_status(code, "too many at once", "CONCURRENCY_LIMIT")
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromMilliseconds(1500)
    status.details.add().Pack(retry)

    error = from_rpc_error(FailedCall(code, "too many at once", status))
    without = from_rpc_error(FailedCall(code, "too big", rich_status(code, "too big", "X")))

    assert isinstance(error, jobgate.ResourceExhaustedError)
    assert (error.reason, error.retry_delay) == ("CONCURRENCY_LIMIT", 1.5)
    assert without.retry_delay is None
