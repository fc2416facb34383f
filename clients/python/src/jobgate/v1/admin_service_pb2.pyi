from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from jobgate.v1 import account_pb2 as _account_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateUserRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _account_pb2.User
    def __init__(self, user: _Optional[_Union[_account_pb2.User, _Mapping]] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _account_pb2.User
    def __init__(self, user: _Optional[_Union[_account_pb2.User, _Mapping]] = ...) -> None: ...

class UpdateUserTariffRequest(_message.Message):
    __slots__ = ("user", "tariff")
    USER_FIELD_NUMBER: _ClassVar[int]
    TARIFF_FIELD_NUMBER: _ClassVar[int]
    user: str
    tariff: str
    def __init__(self, user: _Optional[str] = ..., tariff: _Optional[str] = ...) -> None: ...

class UpdateUserTariffResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _account_pb2.User
    def __init__(self, user: _Optional[_Union[_account_pb2.User, _Mapping]] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("user", "scopes")
    USER_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    user: str
    scopes: _containers.RepeatedScalarFieldContainer[_account_pb2.ApiKeyScope]
    def __init__(self, user: _Optional[str] = ..., scopes: _Optional[_Iterable[_Union[_account_pb2.ApiKeyScope, str]]] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "key")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: _account_pb2.ApiKey
    key: str
    def __init__(self, api_key: _Optional[_Union[_account_pb2.ApiKey, _Mapping]] = ..., key: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys",)
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[_account_pb2.ApiKey]
    def __init__(self, api_keys: _Optional[_Iterable[_Union[_account_pb2.ApiKey, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: _account_pb2.ApiKey
    def __init__(self, api_key: _Optional[_Union[_account_pb2.ApiKey, _Mapping]] = ...) -> None: ...

class SetTariffRequest(_message.Message):
    __slots__ = ("tariff",)
    TARIFF_FIELD_NUMBER: _ClassVar[int]
    tariff: _account_pb2.Tariff
    def __init__(self, tariff: _Optional[_Union[_account_pb2.Tariff, _Mapping]] = ...) -> None: ...

class SetTariffResponse(_message.Message):
    __slots__ = ("tariff",)
    TARIFF_FIELD_NUMBER: _ClassVar[int]
    tariff: _account_pb2.Tariff
    def __init__(self, tariff: _Optional[_Union[_account_pb2.Tariff, _Mapping]] = ...) -> None: ...

class GetTariffRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetTariffResponse(_message.Message):
    __slots__ = ("tariff",)
    TARIFF_FIELD_NUMBER: _ClassVar[int]
    tariff: _account_pb2.Tariff
    def __init__(self, tariff: _Optional[_Union[_account_pb2.Tariff, _Mapping]] = ...) -> None: ...

class TopUpRequest(_message.Message):
    __slots__ = ("user", "amount_micros", "request_id")
    USER_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    user: str
    amount_micros: int
    request_id: str
    def __init__(self, user: _Optional[str] = ..., amount_micros: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class TopUpResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: _account_pb2.Balance
    def __init__(self, balance: _Optional[_Union[_account_pb2.Balance, _Mapping]] = ...) -> None: ...

class GetUserBalanceRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class GetUserBalanceResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: _account_pb2.Balance
    def __init__(self, balance: _Optional[_Union[_account_pb2.Balance, _Mapping]] = ...) -> None: ...

class ListUserUsageRequest(_message.Message):
    __slots__ = ("user", "days")
    USER_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    user: str
    days: int
    def __init__(self, user: _Optional[str] = ..., days: _Optional[int] = ...) -> None: ...

class ListUserUsageResponse(_message.Message):
    __slots__ = ("usage",)
    USAGE_FIELD_NUMBER: _ClassVar[int]
    usage: _containers.RepeatedCompositeFieldContainer[_account_pb2.UsageRecord]
    def __init__(self, usage: _Optional[_Iterable[_Union[_account_pb2.UsageRecord, _Mapping]]] = ...) -> None: ...

class RefundJobRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class RefundJobResponse(_message.Message):
    __slots__ = ("refunded_micros",)
    REFUNDED_MICROS_FIELD_NUMBER: _ClassVar[int]
    refunded_micros: int
    def __init__(self, refunded_micros: _Optional[int] = ...) -> None: ...
