"""The model catalog: what each model takes, returns and costs, and checking a job's input."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from core.errors import InvalidArgument, NotFound, Reason
from core.jobs import JobInput


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
    field: str
    required: bool = False
    description: str = ""


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

    @property
    def provider(self) -> str:
        return self.id.split("/", 1)[0]

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


class Catalog:
    """The models jobgate serves, by id."""

    def __init__(self, models: Iterable[ModelSpec]) -> None:
        self._models = {m.id: m for m in sorted(models, key=lambda m: m.id)}

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
            raise NotFound(f"unknown model {model_id!r}", reason=Reason.UNKNOWN_MODEL) from None
