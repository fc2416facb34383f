"""How jobs, models and events read for people: pure functions from messages to lines."""

from __future__ import annotations

import json
from collections.abc import Sequence

from google.protobuf import json_format, timestamp_pb2
from google.rpc import status_pb2

from jobgate.client._errors import status_error
from jobgate.v1 import account_pb2, job_pb2, model_pb2

BAR_WIDTH = 24


def state_text(state: job_pb2.Job.State) -> str:
    return job_pb2.Job.State.Name(state).removeprefix("STATE_")


def percent(fraction: float) -> str:
    return f"{round(max(0.0, min(1.0, fraction)) * 100):3d}%"


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`[#########...............]  38%`"""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {percent(fraction)}"


def timestamp_text(moment: timestamp_pb2.Timestamp) -> str:
    if not moment.seconds and not moment.nanos:
        return "-"
    return moment.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ")


def error_text(status: status_pb2.Status) -> str:
    """`ABORTED (REQUESTED_FAILURE): the job asked to fail`"""
    return str(status_error(status))


def output_text(output: job_pb2.Output) -> str:
    """`echo: hello`, or for a file `image: https://… (image/png, 12.3 kB)`."""
    kind = output.WhichOneof("content")
    if kind == "blob":
        blob = output.blob
        where = blob.download_uri or blob.key
        return f"{output.label}: {where} ({blob.content_type}, {size_text(blob.size_bytes)})"
    if kind == "json":
        value = json_format.MessageToDict(output.json)
        return f"{output.label}: {json.dumps(value, separators=(',', ':'))}"
    return f"{output.label}: {output.text}"


def size_text(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    value = size / 1000
    for unit in ("kB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def log_text(entry: job_pb2.LogEntry) -> str:
    level = job_pb2.LogEntry.Level.Name(entry.level or job_pb2.LogEntry.LEVEL_INFO)
    return f"[{level.removeprefix('LEVEL_').lower()}] {entry.message}"


def job_line(job: job_pb2.Job) -> str:
    """`jobs/abc  local/echo  QUEUED`"""
    return f"{job.name}  {job.model}  {state_text(job.state)}"


def job_summary(job: job_pb2.Job) -> list[str]:
    """Every field a person may want, one `label  value` line each."""
    fields: list[tuple[str, str]] = [
        ("name", job.name),
        ("model", job.model),
        ("state", state_text(job.state)),
    ]
    if job.state == job_pb2.Job.STATE_RUNNING or job.progress.fraction:
        fields.append(("progress", f"{percent(job.progress.fraction)}  {job.progress.message}"))
    fields += [
        ("attempt", str(job.attempt)),
        ("created", timestamp_text(job.create_time)),
        ("started", timestamp_text(job.start_time)),
        ("ended", timestamp_text(job.end_time)),
    ]
    if job.input.prompt:
        fields.append(("prompt", job.input.prompt))
    fields += [("output", output_text(output)) for output in job.outputs]
    if job.HasField("error"):
        fields.append(("error", error_text(job.error)))
    width = max(len(label) for label, _ in fields)
    return [f"{label:<{width}}  {value}".rstrip() for label, value in fields]


def jobs_table(jobs: Sequence[job_pb2.Job]) -> list[str]:
    rows = [
        [
            job.name,
            state_text(job.state),
            job.model,
            # Progress says something only while a job runs; a finished one keeps its last report.
            percent(job.progress.fraction).strip()
            if job.state == job_pb2.Job.STATE_RUNNING
            else "-",
            timestamp_text(job.create_time),
        ]
        for job in jobs
    ]
    return table(["NAME", "STATE", "MODEL", "PROGRESS", "CREATED"], rows)


def models_table(models: Sequence[model_pb2.Model]) -> list[str]:
    rows = [
        [
            model.id,
            _inputs_text(model),
            _outputs_text(model),
            price_text(model.price),
            first_sentence(model.description),
        ]
        for model in models
    ]
    return table(["MODEL", "INPUTS (* required)", "OUTPUTS", "PRICE", "DESCRIPTION"], rows)


def price_text(price: model_pb2.Price) -> str:
    if not price.per_job_micros and not price.per_unit_micros:
        return "free"
    parts = []
    if price.per_job_micros:
        parts.append(f"{_money(price.per_job_micros)}/job")
    if price.per_unit_micros:
        unit = model_pb2.Price.Unit.Name(price.unit).removeprefix("UNIT_").lower()
        parts.append(f"{_money(price.per_unit_micros)}/{unit.replace('_', ' ')}")
    return f"{' + '.join(parts)} {price.currency_code}".strip()


def balance_lines(balance: account_pb2.Balance) -> list[str]:
    return [
        f"available  {_money(balance.available_micros)}",
        f"held       {_money(balance.held_micros)}  (for jobs not yet settled)",
    ]


def usage_table(usage: Sequence[account_pb2.UsageRecord]) -> list[str]:
    return table(
        ["DAY", "MODEL", "JOBS", "UNITS", "COST"],
        [[u.day, u.model, str(u.job_count), str(u.units), _money(u.cost_micros)] for u in usage],
    )


def first_sentence(description: str) -> str:
    """What fits a table cell; `jobgate models --json` has the whole description."""
    sentence, separator, _ = description.partition(". ")
    return sentence + "." if separator else description


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]


def _inputs_text(model: model_pb2.Model) -> str:
    return ", ".join(f"{i.field}{'*' if i.required else ''}" for i in model.inputs) or "-"


def _outputs_text(model: model_pb2.Model) -> str:
    names = (model_pb2.Model.OutputKind.Name(kind) for kind in model.outputs)
    return ", ".join(name.removeprefix("OUTPUT_KIND_").lower() for name in names) or "-"


def _money(micros: int) -> str:
    return f"{micros / 1_000_000:.6f}".rstrip("0").rstrip(".")
