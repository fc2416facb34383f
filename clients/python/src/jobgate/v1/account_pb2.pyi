import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from jobgate.v1 import model_pb2 as _model_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApiKeyScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    API_KEY_SCOPE_UNSPECIFIED: _ClassVar[ApiKeyScope]
    API_KEY_SCOPE_JOBS: _ClassVar[ApiKeyScope]
    API_KEY_SCOPE_ADMIN: _ClassVar[ApiKeyScope]
API_KEY_SCOPE_UNSPECIFIED: ApiKeyScope
API_KEY_SCOPE_JOBS: ApiKeyScope
API_KEY_SCOPE_ADMIN: ApiKeyScope

class Balance(_message.Message):
    __slots__ = ("name", "available_micros", "held_micros")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MICROS_FIELD_NUMBER: _ClassVar[int]
    HELD_MICROS_FIELD_NUMBER: _ClassVar[int]
    name: str
    available_micros: int
    held_micros: int
    def __init__(self, name: _Optional[str] = ..., available_micros: _Optional[int] = ..., held_micros: _Optional[int] = ...) -> None: ...

class UsageRecord(_message.Message):
    __slots__ = ("day", "model", "job_count", "units", "cost_micros")
    DAY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    JOB_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    day: str
    model: str
    job_count: int
    units: int
    cost_micros: int
    def __init__(self, day: _Optional[str] = ..., model: _Optional[str] = ..., job_count: _Optional[int] = ..., units: _Optional[int] = ..., cost_micros: _Optional[int] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("name", "tariff")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARIFF_FIELD_NUMBER: _ClassVar[int]
    name: str
    tariff: str
    def __init__(self, name: _Optional[str] = ..., tariff: _Optional[str] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("name", "user", "scopes", "revoked", "last_use_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    LAST_USE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    user: str
    scopes: _containers.RepeatedScalarFieldContainer[ApiKeyScope]
    revoked: bool
    last_use_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., user: _Optional[str] = ..., scopes: _Optional[_Iterable[_Union[ApiKeyScope, str]]] = ..., revoked: _Optional[bool] = ..., last_use_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Tariff(_message.Message):
    __slots__ = ("name", "prices", "max_concurrent_jobs", "submits_per_minute")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_JOBS_FIELD_NUMBER: _ClassVar[int]
    SUBMITS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    prices: _containers.RepeatedCompositeFieldContainer[ModelPrice]
    max_concurrent_jobs: int
    submits_per_minute: int
    def __init__(self, name: _Optional[str] = ..., prices: _Optional[_Iterable[_Union[ModelPrice, _Mapping]]] = ..., max_concurrent_jobs: _Optional[int] = ..., submits_per_minute: _Optional[int] = ...) -> None: ...

class ModelPrice(_message.Message):
    __slots__ = ("model", "price")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    model: str
    price: _model_pb2.Price
    def __init__(self, model: _Optional[str] = ..., price: _Optional[_Union[_model_pb2.Price, _Mapping]] = ...) -> None: ...
