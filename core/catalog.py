"""The model catalog: what each model takes, returns and costs, and checking a job's input."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from core.errors import FailedPrecondition, InvalidArgument, NotFound, Reason
from core.jobs import BlobRef, JobInput


class OutputKind(StrEnum):
    TEXT = "TEXT"
    JSON = "JSON"
    IMAGE = "IMAGE"
    VIDEO = "VIDEO"
    AUDIO = "AUDIO"


class PriceUnit(StrEnum):
    NONE = "NONE"
    IMAGE = "IMAGE"
    OUTPUT_SECOND = "OUTPUT_SECOND"
    THOUSAND_TOKENS = "THOUSAND_TOKENS"


@dataclass(frozen=True)
class Price:
    """Money in millionths of the currency unit: no price needs a float."""

    per_job_micros: int = 0
    per_unit_micros: int = 0
    unit: PriceUnit = PriceUnit.NONE
    currency_code: str = "USD"


@dataclass(frozen=True)
class InputSpec:
    """One JobInput field a model takes, and the limits CreateJob holds it to (0 or empty: no
    limit beyond the field's own)."""

    field: str
    required: bool = False
    description: str = ""
    # The only values taken: sizes (`1024x1024`), aspect ratios (`16:9`), durations (`5s`).
    choices: tuple[str, ...] = ()
    max_length: int = 0  # characters, for text fields
    max_items: int = 0  # for files
    content_types: tuple[str, ...] = ()  # for files: the media types taken


def duration_choice(seconds: float) -> str:
    """A duration as a choice names it, and as the API's JSON writes it: `5s`, `2.5s`."""
    return f"{seconds:g}s"


@dataclass(frozen=True)
class ModelSpec:
    id: str
    display_name: str
    description: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputKind, ...]
    price: Price = Price()
    # The most price units one job can use (images, output seconds or tokens, by price.unit):
    # what a job's hold is sized by before it runs.
    max_units: int = 0
    # An equivalent model a job may run on instead while this one's provider is unavailable.
    fallback: str = ""

    @property
    def provider(self) -> str:
        return self.id.split("/", 1)[0]

    def input(self, name: str) -> InputSpec | None:
        return next((spec for spec in self.inputs if spec.field == name), None)

    def validate(self, job_input: JobInput, field_prefix: str = "job.input") -> None:
        """Raises InvalidArgument naming the first field this model requires or does not take."""
        taken = {spec.field for spec in self.inputs}
        for name in job_input.fields_set():
            if name not in taken:
                raise InvalidArgument(
                    f"{field_prefix}.{name}", f"model {self.id} does not take input field {name!r}"
                )
        given = set(job_input.fields_set())
        for spec in self.inputs:
            if spec.required and spec.field not in given:
                raise InvalidArgument(
                    f"{field_prefix}.{spec.field}", f"model {self.id} requires {spec.field!r}"
                )
        for spec in self.inputs:
            _check_limits(self.id, spec, job_input, f"{field_prefix}.{spec.field}")

    def validate_file(self, index: int, ref: BlobRef, field_prefix: str = "job.input") -> None:
        """Raises InvalidArgument when input file `index` (stored, so its type is known) is of
        a type this model does not take."""
        spec = self.input("files")
        if spec is None or not spec.content_types:
            return
        content_type = ref.content_type.split(";", 1)[0].strip()
        if content_type not in spec.content_types:
            raise InvalidArgument(
                f"{field_prefix}.files[{index}]",
                f"model {self.id} takes files of type {', '.join(spec.content_types)},"
                f" not {content_type or 'unknown'}",
            )


def _check_limits(model: str, spec: InputSpec, job_input: JobInput, field: str) -> None:
    value: object
    if spec.field == "duration":
        value = job_input.duration_seconds
        shown = None if value is None else duration_choice(job_input.duration_seconds or 0)
    else:
        value = getattr(job_input, spec.field, None)
        shown = value if isinstance(value, str) else None
    if value in (None, "", ()):
        return
    if spec.choices and shown is not None and shown not in spec.choices:
        raise InvalidArgument(
            field, f"model {model} takes {spec.field} {' or '.join(spec.choices)}, not {shown!r}"
        )
    if spec.max_length and isinstance(value, str) and len(value) > spec.max_length:
        raise InvalidArgument(
            field,
            f"model {model} takes {spec.field} of at most {spec.max_length} characters,"
            f" not {len(value)}",
        )
    if spec.max_items and isinstance(value, tuple) and len(value) > spec.max_items:
        raise InvalidArgument(
            field, f"model {model} takes at most {spec.max_items} {spec.field}, not {len(value)}"
        )


class Catalog:
    """The models jobgate serves, by id. `unconfigured` names models jobgate knows but this
    deployment cannot run (their provider has no API key), each with why: not listed, and
    refused at CreateJob with a message saying what to set."""

    def __init__(
        self, models: Iterable[ModelSpec], unconfigured: Mapping[str, str] | None = None
    ) -> None:
        self._models = {m.id: m for m in sorted(models, key=lambda m: m.id)}
        self._unconfigured = dict(unconfigured or {})

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._models

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self._models[model_id]
        except KeyError:
            if model_id in self._unconfigured:
                raise FailedPrecondition(
                    f"model {model_id!r} is not available here: {self._unconfigured[model_id]}",
                    reason=Reason.MODEL_NOT_CONFIGURED,
                ) from None
            raise NotFound(f"unknown model {model_id!r}", reason=Reason.UNKNOWN_MODEL) from None
