"""The server's pure rules: filter parsing, page tokens and sizes, and Job.error codes."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from google.rpc import error_details_pb2

from core.errors import InvalidArgument, Reason
from core.jobs import JobError, JobState
from server.listing import (
    Cursor,
    JobFilter,
    decode_job_token,
    encode_job_token,
    page_size,
    parse_filter,
)
from server.status import job_error_status


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", JobFilter()),
        ("  ", JobFilter()),
        ("state = RUNNING", JobFilter(state=JobState.RUNNING)),
        ("state=STATE_SUCCEEDED", JobFilter(state=JobState.SUCCEEDED)),
        ("state = cancelled", JobFilter(state=JobState.CANCELLED)),
        ('model = "local/echo"', JobFilter(model="local/echo")),
        ("model = local/echo", JobFilter(model="local/echo")),
        (
            'model = "local/sleep" AND state = QUEUED',
            JobFilter(state=JobState.QUEUED, model="local/sleep"),
        ),
    ],
)
def test_the_supported_filters_read_as_meant(text: str, expected: JobFilter) -> None:
    assert parse_filter(text) == expected


def test_a_page_token_carries_its_cursor_and_only_for_its_filter() -> None:
    cursor = Cursor(datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "0123abcd")
    running = parse_filter("state = RUNNING")
    token = encode_job_token(cursor, running)

    assert decode_job_token(token, parse_filter("state=STATE_RUNNING")) == cursor
    assert decode_job_token("", running) is None
    with pytest.raises(InvalidArgument) as caught:
        decode_job_token(token, JobFilter())
    assert caught.value.reason is Reason.INVALID_PAGE_TOKEN and caught.value.field == "page_token"


@pytest.mark.parametrize(("asked", "given"), [(0, 50), (1, 1), (1000, 1000), (5000, 1000)])
def test_page_sizes_default_and_cap(asked: int, given: int) -> None:
    assert page_size(asked) == given


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (Reason.CANCELLED, grpc.StatusCode.CANCELLED),
        (Reason.INVALID_INPUT, grpc.StatusCode.INVALID_ARGUMENT),
        (Reason.PROVIDER_ERROR, grpc.StatusCode.UNAVAILABLE),
        (Reason.REQUESTED_FAILURE, grpc.StatusCode.ABORTED),
        (Reason.INTERNAL, grpc.StatusCode.UNKNOWN),
    ],
)
def test_a_job_error_becomes_a_status_with_its_reason(
    reason: Reason, code: grpc.StatusCode
) -> None:
    status = job_error_status(JobError(reason, "why"))

    info = error_details_pb2.ErrorInfo()
    assert (status.code, status.message) == (code.value[0], "why")
    assert len(status.details) == 1 and status.details[0].Unpack(info)
    assert (info.reason, info.domain) == (reason.value, "jobgate.dev")
