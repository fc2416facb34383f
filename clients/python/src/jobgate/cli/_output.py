"""What commands print: text for people, or JSON lines for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Protocol, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2

from jobgate.cli import _text as text
from jobgate.cli._live import LiveLine
from jobgate.client._messages import TERMINAL_STATES
from jobgate.v1 import account_pb2, job_pb2, job_service_pb2, model_pb2


class Output(Protocol):
    def job(self, job: job_pb2.Job) -> None: ...

    def jobs(self, jobs: Iterable[job_pb2.Job]) -> None: ...

    def models(self, models: Sequence[model_pb2.Model]) -> None: ...

    def watch_message(self, message: job_service_pb2.WatchJobResponse) -> None: ...

    def balance(self, balance: account_pb2.Balance) -> None: ...

    def usage(self, usage: Sequence[account_pb2.UsageRecord]) -> None: ...

    def close(self) -> None: ...


class JsonOutput:
    """One JSON object per line on stdout, in protobuf's JSON mapping (json_format)."""

    def __init__(self, stdout: TextIO = sys.stdout) -> None:
        self._stdout = stdout

    def job(self, job: job_pb2.Job) -> None:
        self._write(job)

    def jobs(self, jobs: Iterable[job_pb2.Job]) -> None:
        for job in jobs:
            self._write(job)

    def models(self, models: Sequence[model_pb2.Model]) -> None:
        for model in models:
            self._write(model)

    def watch_message(self, message: job_service_pb2.WatchJobResponse) -> None:
        # Keepalives only prove the stream is alive; scripts have no use for them.
        if message.WhichOneof("update") != "keepalive":
            self._write(message)

    def balance(self, balance: account_pb2.Balance) -> None:
        self._write(balance)

    def usage(self, usage: Sequence[account_pb2.UsageRecord]) -> None:
        for record in usage:
            self._write(record)

    def close(self) -> None:
        self._stdout.flush()

    def _write(self, message: Message) -> None:
        line = json.dumps(json_format.MessageToDict(message), separators=(",", ":"))
        self._stdout.write(line + "\n")
        self._stdout.flush()


class HumanOutput:
    """Summaries and tables on stdout; while watching, a live progress line on stderr with log
    lines, outputs and the final state on stdout above it."""

    def __init__(self, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> None:
        self._stdout = stdout
        self._live = LiveLine(stderr)
        self._state: job_pb2.Job.State = job_pb2.Job.STATE_UNSPECIFIED
        self._progress = job_pb2.Progress()
        self._jobs_ahead: int | None = None

    def job(self, job: job_pb2.Job) -> None:
        self._lines(text.job_summary(job))

    def jobs(self, jobs: Iterable[job_pb2.Job]) -> None:
        rows = list(jobs)
        self._lines(text.jobs_table(rows) if rows else ["no jobs"])

    def models(self, models: Sequence[model_pb2.Model]) -> None:
        self._lines(text.models_table(models))

    def watch_message(self, message: job_service_pb2.WatchJobResponse) -> None:
        kind = message.WhichOneof("update")
        if kind == "job":
            self._snapshot(message.job)
        elif kind == "event":
            self._event(message.event)
        elif kind == "queue_position":
            self._jobs_ahead = message.queue_position.jobs_ahead
            self._show_status()

    def balance(self, balance: account_pb2.Balance) -> None:
        self._lines(text.balance_lines(balance))

    def usage(self, usage: Sequence[account_pb2.UsageRecord]) -> None:
        self._lines(text.usage_table(usage) if usage else ["no charged jobs"])

    def close(self) -> None:
        self._live.hide()
        self._stdout.flush()

    def _snapshot(self, job: job_pb2.Job) -> None:
        self._lines([text.job_line(job)])
        self._lines([f"output  {text.output_text(output)}" for output in job.outputs])
        self._progress.CopyFrom(job.progress)
        self._enter(job.state, job.error if job.HasField("error") else None)

    def _event(self, event: job_pb2.JobEvent) -> None:
        kind = event.WhichOneof("kind")
        if kind == "state_change":
            change = event.state_change
            self._enter(change.state, change.error if change.HasField("error") else None)
        elif kind == "progress":
            self._progress.CopyFrom(event.progress)
            self._show_status()
        elif kind == "log":
            self._lines([text.log_text(event.log)])
        elif kind == "output":
            self._lines([f"output  {text.output_text(event.output)}"])

    def _enter(self, state: job_pb2.Job.State, error: status_pb2.Status | None) -> None:
        self._state = state
        if state != job_pb2.Job.STATE_QUEUED:
            self._jobs_ahead = None
        if state in TERMINAL_STATES:
            self._live.clear()
            final = text.state_text(state)
            if error is not None:
                final += f"  {text.error_text(error)}"
            self._lines([final])
        else:
            self._show_status()

    def _show_status(self) -> None:
        status = text.state_text(self._state)
        if self._state == job_pb2.Job.STATE_QUEUED and self._jobs_ahead is not None:
            status += f"  {self._jobs_ahead} ahead"
        elif self._state == job_pb2.Job.STATE_RUNNING:
            status += f"  {text.progress_bar(self._progress.fraction)}  {self._progress.message}"
        self._live.show(status.rstrip())

    def _lines(self, lines: Iterable[str]) -> None:
        lines = list(lines)
        if not lines:
            return
        self._live.hide()
        self._stdout.write("".join(line + "\n" for line in lines))
        self._stdout.flush()
        self._live.restore()
