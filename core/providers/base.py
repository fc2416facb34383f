"""The provider interface: how a worker runs one attempt of a job on a model."""

from __future__ import annotations

from typing import Any, Protocol

from core.catalog import ModelSpec
from core.errors import JobgateError, Reason
from core.jobs import BlobRef, Job, LogLevel


class JobFailed(JobgateError):
    """Raised by a provider to end the job FAILED with a stable reason."""

    reason = Reason.PROVIDER_ERROR


class RunContext(Protocol):
    """What a provider gets for one attempt. Every call is recorded on the job and streamed to
    its watchers; after the job is cancelled or taken over by a newer attempt they record
    nothing, and the provider's task is cancelled."""

    @property
    def job(self) -> Job: ...

    async def progress(self, fraction: float, message: str = "") -> None: ...

    async def log(self, message: str, level: LogLevel = LogLevel.INFO) -> None: ...

    async def output_blob(self, label: str, data: bytes, content_type: str) -> BlobRef:
        """Stores `data` in the blob store and records it as an output, by reference."""

    async def output_text(self, label: str, text: str) -> None: ...

    async def output_json(self, label: str, value: Any) -> None: ...

    async def read_file(self, ref: BlobRef) -> bytes:
        """The content of one of the job's input files."""


class Provider(Protocol):
    """Runs the models it lists. Returning normally means SUCCEEDED; raising JobFailed means
    FAILED with its reason; any other exception is a fault of this attempt, retried later."""

    @property
    def models(self) -> tuple[ModelSpec, ...]: ...

    async def run(self, ctx: RunContext) -> None: ...
