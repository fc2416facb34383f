"""The resumable state of one watch, shared by both clients: what was seen, what to ask for when
reconnecting, and when the watch is over."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc

from jobgate.client._errors import JobgateError, UnavailableError
from jobgate.client._messages import TERMINAL_STATES, job_name
from jobgate.client._retry import Backoff, Deadline, RetryPolicy
from jobgate.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

Metadata = Sequence[tuple[str, str]]

log = logging.getLogger(__name__)


class WatchCursor:
    """Drives reconnects: each connection asks for the events after the last one seen, and
    `accept` drops what a reconnect sends twice, so callers see every event exactly once."""

    def __init__(
        self,
        name_or_id: str | None,
        after_sequence: int,
        policy: RetryPolicy,
        timeout: float | None,
        create: job_service_pb2.CreateJobRequest | None = None,
    ) -> None:
        if after_sequence < 0:
            raise ValueError(f"after_sequence must not be negative, not {after_sequence}")
        self.name = job_name(name_or_id) if name_or_id is not None else None
        self.last_sequence = after_sequence
        self.finished = False
        self._create = create
        # The server sends a snapshot only to a watch that starts from 0.
        self._snapshot_seen = after_sequence > 0
        self._deadline = Deadline(timeout)
        self._backoff = Backoff(policy, self._deadline)

    @classmethod
    def for_run(
        cls, create: job_service_pb2.CreateJobRequest, policy: RetryPolicy, timeout: float | None
    ) -> WatchCursor:
        """A watch of the job that RunJob creates: named by the stream's first message."""
        return cls(None, 0, policy, timeout, create)

    def open(self, stub: job_service_pb2_grpc.JobServiceStub, metadata: Metadata) -> Any:
        """The next call, with what is left of the timeout as its deadline: RunJob until the
        job's name is known (a retry carries the same request_id, so it creates nothing twice),
        then WatchJob from the last event seen."""
        timeout = self._deadline.remaining()
        if self.name is None:
            assert self._create is not None
            return stub.RunJob(self._create, metadata=metadata, timeout=timeout)
        request = job_service_pb2.WatchJobRequest(name=self.name, after_sequence=self.last_sequence)
        return stub.WatchJob(request, metadata=metadata, timeout=timeout)

    def accept(self, message: job_service_pb2.WatchJobResponse) -> bool:
        """Records a message; False when the caller has already seen it."""
        self._backoff.reset()
        kind = message.WhichOneof("update")
        if kind == "job":
            if self._snapshot_seen:
                return False
            self._snapshot_seen = True
            self.name = self.name or message.job.name
            self.last_sequence = max(self.last_sequence, message.job.event_sequence)
            self.finished = message.job.state in TERMINAL_STATES
        elif kind == "event":
            event = message.event
            if event.sequence <= self.last_sequence:
                return False
            self.last_sequence = event.sequence
            if event.WhichOneof("kind") == "state_change":
                self.finished = event.state_change.state in TERMINAL_STATES
        return True

    def caught_up(self, job: job_pb2.Job) -> bool:
        """After a stream ended cleanly but early (e.g. resumed past the end of a finished job):
        whether `job` shows there is nothing left to see."""
        self.finished = job.state in TERMINAL_STATES and job.event_sequence <= self.last_sequence
        return self.finished

    def pause_after(self, error: JobgateError | None) -> float:
        """The pause before reconnecting after the stream broke (`error`) or ended before the job
        did (None); raises when reconnecting is pointless."""
        if error is None:
            error = UnavailableError(
                grpc.StatusCode.UNAVAILABLE, f"the watch of {self.name} ended before the job did"
            )
        delay = self._backoff.pause_after(error)
        log.info(
            "watch of %s interrupted (%s); resuming after event %d in %.2f s",
            self.name,
            error,
            self.last_sequence,
            delay,
        )
        return delay
