from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Model(_message.Message):
    __slots__ = ("id", "provider", "display_name", "description", "inputs", "outputs", "price", "max_units", "fallback_model")
    class OutputKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTPUT_KIND_UNSPECIFIED: _ClassVar[Model.OutputKind]
        OUTPUT_KIND_TEXT: _ClassVar[Model.OutputKind]
        OUTPUT_KIND_JSON: _ClassVar[Model.OutputKind]
        OUTPUT_KIND_IMAGE: _ClassVar[Model.OutputKind]
        OUTPUT_KIND_VIDEO: _ClassVar[Model.OutputKind]
        OUTPUT_KIND_AUDIO: _ClassVar[Model.OutputKind]
    OUTPUT_KIND_UNSPECIFIED: Model.OutputKind
    OUTPUT_KIND_TEXT: Model.OutputKind
    OUTPUT_KIND_JSON: Model.OutputKind
    OUTPUT_KIND_IMAGE: Model.OutputKind
    OUTPUT_KIND_VIDEO: Model.OutputKind
    OUTPUT_KIND_AUDIO: Model.OutputKind
    ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_UNITS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_MODEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    provider: str
    display_name: str
    description: str
    inputs: _containers.RepeatedCompositeFieldContainer[InputField]
    outputs: _containers.RepeatedScalarFieldContainer[Model.OutputKind]
    price: Price
    max_units: int
    fallback_model: str
    def __init__(self, id: _Optional[str] = ..., provider: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[InputField, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[Model.OutputKind, str]]] = ..., price: _Optional[_Union[Price, _Mapping]] = ..., max_units: _Optional[int] = ..., fallback_model: _Optional[str] = ...) -> None: ...

class InputField(_message.Message):
    __slots__ = ("field", "required", "description", "choices", "max_length", "max_items", "content_types")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    field: str
    required: bool
    description: str
    choices: _containers.RepeatedScalarFieldContainer[str]
    max_length: int
    max_items: int
    content_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, field: _Optional[str] = ..., required: _Optional[bool] = ..., description: _Optional[str] = ..., choices: _Optional[_Iterable[str]] = ..., max_length: _Optional[int] = ..., max_items: _Optional[int] = ..., content_types: _Optional[_Iterable[str]] = ...) -> None: ...

class Price(_message.Message):
    __slots__ = ("currency_code", "per_job_micros", "per_unit_micros", "unit")
    class Unit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNIT_UNSPECIFIED: _ClassVar[Price.Unit]
        UNIT_IMAGE: _ClassVar[Price.Unit]
        UNIT_OUTPUT_SECOND: _ClassVar[Price.Unit]
        UNIT_THOUSAND_TOKENS: _ClassVar[Price.Unit]
    UNIT_UNSPECIFIED: Price.Unit
    UNIT_IMAGE: Price.Unit
    UNIT_OUTPUT_SECOND: Price.Unit
    UNIT_THOUSAND_TOKENS: Price.Unit
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    PER_JOB_MICROS_FIELD_NUMBER: _ClassVar[int]
    PER_UNIT_MICROS_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    currency_code: str
    per_job_micros: int
    per_unit_micros: int
    unit: Price.Unit
    def __init__(self, currency_code: _Optional[str] = ..., per_job_micros: _Optional[int] = ..., per_unit_micros: _Optional[int] = ..., unit: _Optional[_Union[Price.Unit, str]] = ...) -> None: ...
