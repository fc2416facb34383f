"""Domain values to plain JSON-able dicts and back, shared by every store adapter.

One encoding for every database, so a job written by one adapter reads the same in another and
the event payloads stored in SQLite, MongoDB or PostgreSQL never drift apart.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from core.errors import Reason
from core.jobs import (
    BlobRef,
    EventPayload,
    Job,
    JobError,
    JobInput,
    JobState,
    LogLevel,
    LogLine,
    Output,
    Progress,
    ProviderTask,
    StateChanged,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(moment: datetime) -> datetime:
    """`moment` in UTC; naive datetimes are refused because their zone is a guess."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: jobgate keeps times in UTC")
    return moment.astimezone(UTC)


def time_to_micros(moment: datetime) -> int:
    """Microseconds since the epoch: an integer sorts and compares exactly in every database."""
    delta = utc(moment) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def time_from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def time_to_text(moment: datetime) -> str:
    return utc(moment).isoformat()


def time_from_text(text: str) -> datetime:
    return utc(datetime.fromisoformat(text))


def input_to_dict(job_input: JobInput) -> dict[str, Any]:
    # By hand rather than dataclasses.asdict: this runs for every job and asdict deep-copies.
    return {
        "prompt": job_input.prompt,
        "negative_prompt": job_input.negative_prompt,
        "files": [blob_to_dict(f) for f in job_input.files],
        "size": job_input.size,
        "aspect_ratio": job_input.aspect_ratio,
        "duration_seconds": job_input.duration_seconds,
        "seed": job_input.seed,
        "options": job_input.options,
    }


def input_from_dict(data: dict[str, Any]) -> JobInput:
    return JobInput.from_dict(data)


def blob_to_dict(blob: BlobRef) -> dict[str, Any]:
    return {
        "key": blob.key,
        "content_type": blob.content_type,
        "size_bytes": blob.size_bytes,
        "sha256": blob.sha256,
    }


def output_to_dict(output: Output) -> dict[str, Any]:
    return {
        "label": output.label,
        "blob": blob_to_dict(output.blob) if output.blob else None,
        "text": output.text,
        "json": output.json,
    }


def output_from_dict(data: dict[str, Any]) -> Output:
    return Output.from_dict(data)


def progress_to_dict(progress: Progress) -> dict[str, Any]:
    return {"fraction": progress.fraction, "message": progress.message}


def progress_from_dict(data: dict[str, Any]) -> Progress:
    return Progress(fraction=float(data["fraction"]), message=data.get("message", ""))


def error_to_dict(error: JobError) -> dict[str, Any]:
    return {"reason": error.reason.value, "message": error.message}


def error_from_dict(data: dict[str, Any]) -> JobError:
    return JobError(reason=Reason(data["reason"]), message=data["message"])


def payload_to_dict(payload: EventPayload) -> dict[str, Any]:
    """An event payload tagged with its `kind`: state, progress, log or output."""
    match payload:
        case StateChanged(state=state, error=error):
            return {
                "kind": "state",
                "state": state.value,
                "error": error_to_dict(error) if error else None,
            }
        case Progress():
            return {"kind": "progress", **progress_to_dict(payload)}
        case LogLine(message=message, level=level):
            return {"kind": "log", "message": message, "level": level.value}
        case Output():
            return {"kind": "output", **output_to_dict(payload)}
    raise TypeError(f"not an event payload: {payload!r}")


def payload_from_dict(data: dict[str, Any]) -> EventPayload:
    fields = {k: v for k, v in data.items() if k != "kind"}
    match data.get("kind"):
        case "state":
            error = fields.get("error")
            return StateChanged(
                state=JobState(fields["state"]), error=error_from_dict(error) if error else None
            )
        case "progress":
            return progress_from_dict(fields)
        case "log":
            return LogLine(message=fields["message"], level=LogLevel(fields["level"]))
        case "output":
            return output_from_dict(fields)
    raise ValueError(f"unknown event payload kind {data.get('kind')!r}")


def job_to_dict(job: Job) -> dict[str, Any]:
    """Every field of a job; times as RFC 3339 text so the dict is plain JSON."""
    return {
        "id": job.id,
        "owner": job.owner,
        "model": job.model,
        "input": input_to_dict(job.input),
        "state": job.state.value,
        "attempt": job.attempt,
        "progress": progress_to_dict(job.progress) if job.progress else None,
        "outputs": [output_to_dict(o) for o in job.outputs],
        "error": error_to_dict(job.error) if job.error else None,
        "create_time": time_to_text(job.create_time),
        "start_time": time_to_text(job.start_time) if job.start_time else None,
        "end_time": time_to_text(job.end_time) if job.end_time else None,
        "event_sequence": job.event_sequence,
        "request_id": job.request_id,
        "lease_expire_time": (
            time_to_text(job.lease_expire_time) if job.lease_expire_time else None
        ),
    }


def job_from_dict(data: dict[str, Any]) -> Job:
    progress = data.get("progress")
    error = data.get("error")
    start_time = data.get("start_time")
    end_time = data.get("end_time")
    lease_expire_time = data.get("lease_expire_time")
    return Job(
        id=data["id"],
        owner=data["owner"],
        model=data["model"],
        input=input_from_dict(data["input"]),
        state=JobState(data["state"]),
        attempt=data["attempt"],
        progress=progress_from_dict(progress) if progress else None,
        outputs=tuple(output_from_dict(o) for o in data.get("outputs", ())),
        error=error_from_dict(error) if error else None,
        create_time=time_from_text(data["create_time"]),
        start_time=time_from_text(start_time) if start_time else None,
        end_time=time_from_text(end_time) if end_time else None,
        event_sequence=data["event_sequence"],
        request_id=data.get("request_id"),
        lease_expire_time=time_from_text(lease_expire_time) if lease_expire_time else None,
    )


# One encoder for every call: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Compact JSON for storing."""
    return _ENCODER.encode(value)


def loads(text: str) -> Any:
    return json.loads(text)


def provider_task_to_dict(task: ProviderTask) -> dict[str, Any]:
    return {"model": task.model, "id": task.id}


def provider_task_from_dict(data: dict[str, Any]) -> ProviderTask:
    return ProviderTask(model=data["model"], id=data["id"])
