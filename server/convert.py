"""The domain (core.jobs, core.catalog) to and from the API's messages (jobgate.v1)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from jobgate.v1 import job_pb2, model_pb2

from core.catalog import ModelSpec, OutputKind, PriceUnit
from core.errors import InvalidArgument
from core.jobs import (
    BlobRef,
    Job,
    JobEvent,
    JobInput,
    JobState,
    LogLevel,
    LogLine,
    Output,
    Progress,
    StateChanged,
)
from core.ports import BlobStore
from server.status import job_error_status

# JSON numbers arrive as doubles; integral ones within this bound go back to int exactly.
_MAX_SAFE_INTEGER = 2**53


def state_to_proto(state: JobState) -> job_pb2.Job.State.ValueType:
    return job_pb2.Job.State.Value(f"STATE_{state.value}")


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def job_input_from_proto(message: job_pb2.JobInput, field: str = "job.input") -> JobInput:
    """The domain input; InvalidArgument for values no model could take."""
    duration_seconds = None
    if message.HasField("duration"):
        duration_seconds = message.duration.ToNanoseconds() / 1e9
        if duration_seconds <= 0:
            raise InvalidArgument(f"{field}.duration", "duration must be positive")
    options: dict[str, Any] = {}
    if message.HasField("options"):
        options = _integral_numbers(json_format.MessageToDict(message.options))
    return JobInput(
        prompt=message.prompt,
        negative_prompt=message.negative_prompt,
        files=tuple(BlobRef(key=f.key) for f in message.files),
        size=message.size,
        aspect_ratio=message.aspect_ratio,
        duration_seconds=duration_seconds,
        seed=message.seed if message.HasField("seed") else None,
        options=options,
    )


def job_input_to_proto(job_input: JobInput) -> job_pb2.JobInput:
    message = job_pb2.JobInput(
        prompt=job_input.prompt,
        negative_prompt=job_input.negative_prompt,
        files=[_blob_ref(ref) for ref in job_input.files],
        size=job_input.size,
        aspect_ratio=job_input.aspect_ratio,
    )
    if job_input.duration_seconds is not None:
        message.duration.FromNanoseconds(round(job_input.duration_seconds * 1e9))
    if job_input.seed is not None:
        message.seed = job_input.seed
    if job_input.options:
        message.options.update(job_input.options)
    return message


def model_to_proto(spec: ModelSpec) -> model_pb2.Model:
    return model_pb2.Model(
        id=spec.id,
        provider=spec.provider,
        display_name=spec.display_name,
        description=spec.description,
        inputs=[
            model_pb2.InputField(
                field=i.field,
                required=i.required,
                description=i.description,
                choices=i.choices,
                max_length=i.max_length,
                max_items=i.max_items,
                content_types=i.content_types,
            )
            for i in spec.inputs
        ],
        outputs=[_output_kind(kind) for kind in spec.outputs],
        price=model_pb2.Price(
            currency_code=spec.price.currency_code,
            per_job_micros=spec.price.per_job_micros,
            per_unit_micros=spec.price.per_unit_micros,
            unit=_price_unit(spec.price.unit),
        ),
        max_units=spec.max_units,
        fallback_model=spec.fallback,
    )


class JobRenderer:
    """Jobs and events as messages. Blob outputs get a fresh download URL each time they are
    rendered: URLs expire, so none is ever stored."""

    def __init__(self, blobs: BlobStore, download_ttl: timedelta) -> None:
        self._blobs = blobs
        self._ttl = download_ttl

    async def job(self, job: Job) -> job_pb2.Job:
        message = job_pb2.Job(
            name=job.name,
            model=job.model,
            input=job_input_to_proto(job.input),
            state=state_to_proto(job.state),
            attempt=job.attempt,
            create_time=timestamp(job.create_time),
            outputs=[await self.output(o) for o in job.outputs],
            event_sequence=job.event_sequence,
        )
        if job.progress is not None:
            message.progress.CopyFrom(_progress(job.progress))
        if job.start_time is not None:
            message.start_time.CopyFrom(timestamp(job.start_time))
        if job.end_time is not None:
            message.end_time.CopyFrom(timestamp(job.end_time))
        if job.error is not None:
            message.error.CopyFrom(job_error_status(job.error))
        return message

    async def event(self, event: JobEvent) -> job_pb2.JobEvent:
        message = job_pb2.JobEvent(
            sequence=event.sequence, create_time=timestamp(event.time), attempt=event.attempt
        )
        payload = event.payload
        if isinstance(payload, StateChanged):
            message.state_change.state = state_to_proto(payload.state)
            if payload.error is not None:
                message.state_change.error.CopyFrom(job_error_status(payload.error))
        elif isinstance(payload, Progress):
            message.progress.CopyFrom(_progress(payload))
        elif isinstance(payload, LogLine):
            message.log.CopyFrom(_log_entry(payload))
        else:
            message.output.CopyFrom(await self.output(payload))
        return message

    async def output(self, output: Output) -> job_pb2.Output:
        message = job_pb2.Output(label=output.label)
        if output.blob is not None:
            # Stated a little before the URL really expires, never after.
            expire_time = datetime.now(UTC) + self._ttl
            blob = _blob_ref(output.blob)
            blob.download_uri = await self._blobs.download_url(output.blob.key, self._ttl)
            blob.download_expire_time.CopyFrom(timestamp(expire_time))
            message.blob.CopyFrom(blob)
        elif output.text is not None:
            message.text = output.text
        else:
            json_format.ParseDict(output.json, message.json)
        return message


def _blob_ref(ref: BlobRef) -> job_pb2.BlobRef:
    return job_pb2.BlobRef(
        key=ref.key, content_type=ref.content_type, size_bytes=ref.size_bytes, sha256=ref.sha256
    )


def _progress(progress: Progress) -> job_pb2.Progress:
    return job_pb2.Progress(fraction=progress.fraction, message=progress.message)


def _log_entry(line: LogLine) -> job_pb2.LogEntry:
    return job_pb2.LogEntry(
        level=job_pb2.LogEntry.Level.Value(f"LEVEL_{LogLevel(line.level).value}"),
        message=line.message,
    )


def _output_kind(kind: OutputKind) -> model_pb2.Model.OutputKind.ValueType:
    return model_pb2.Model.OutputKind.Value(f"OUTPUT_KIND_{kind.value}")


def _price_unit(unit: PriceUnit) -> model_pb2.Price.Unit.ValueType:
    if unit is PriceUnit.NONE:
        return model_pb2.Price.UNIT_UNSPECIFIED
    return model_pb2.Price.Unit.Value(f"UNIT_{unit.value}")


def _integral_numbers(value: Any) -> Any:
    """`value` with whole doubles as ints: Struct has only doubles, but `{"n": 3}` means 3."""
    if isinstance(value, dict):
        return {k: _integral_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_numbers(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value) if abs(value) <= _MAX_SAFE_INTEGER else value
    return value
