from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_API_KEY_MISSING: _ClassVar[ErrorReason]
    ERROR_REASON_API_KEY_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_ARGUMENT: _ClassVar[ErrorReason]
    ERROR_REASON_UNKNOWN_MODEL: _ClassVar[ErrorReason]
    ERROR_REASON_JOB_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_BLOB_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_JOB_FINISHED: _ClassVar[ErrorReason]
    ERROR_REASON_REQUEST_ID_REUSED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_PAGE_TOKEN: _ClassVar[ErrorReason]
    ERROR_REASON_SHUTTING_DOWN: _ClassVar[ErrorReason]
    ERROR_REASON_CANCELLED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_INPUT: _ClassVar[ErrorReason]
    ERROR_REASON_PROVIDER_ERROR: _ClassVar[ErrorReason]
    ERROR_REASON_REQUESTED_FAILURE: _ClassVar[ErrorReason]
    ERROR_REASON_INTERNAL: _ClassVar[ErrorReason]
    ERROR_REASON_QUEUE_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_API_KEY_SCOPE_MISSING: _ClassVar[ErrorReason]
    ERROR_REASON_INSUFFICIENT_BALANCE: _ClassVar[ErrorReason]
    ERROR_REASON_CONCURRENCY_LIMIT: _ClassVar[ErrorReason]
    ERROR_REASON_RATE_LIMIT: _ClassVar[ErrorReason]
    ERROR_REASON_USER_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_TARIFF_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_API_KEY_NOT_FOUND: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_API_KEY_MISSING: ErrorReason
ERROR_REASON_API_KEY_INVALID: ErrorReason
ERROR_REASON_INVALID_ARGUMENT: ErrorReason
ERROR_REASON_UNKNOWN_MODEL: ErrorReason
ERROR_REASON_JOB_NOT_FOUND: ErrorReason
ERROR_REASON_BLOB_NOT_FOUND: ErrorReason
ERROR_REASON_JOB_FINISHED: ErrorReason
ERROR_REASON_REQUEST_ID_REUSED: ErrorReason
ERROR_REASON_INVALID_PAGE_TOKEN: ErrorReason
ERROR_REASON_SHUTTING_DOWN: ErrorReason
ERROR_REASON_CANCELLED: ErrorReason
ERROR_REASON_INVALID_INPUT: ErrorReason
ERROR_REASON_PROVIDER_ERROR: ErrorReason
ERROR_REASON_REQUESTED_FAILURE: ErrorReason
ERROR_REASON_INTERNAL: ErrorReason
ERROR_REASON_QUEUE_UNAVAILABLE: ErrorReason
ERROR_REASON_API_KEY_SCOPE_MISSING: ErrorReason
ERROR_REASON_INSUFFICIENT_BALANCE: ErrorReason
ERROR_REASON_CONCURRENCY_LIMIT: ErrorReason
ERROR_REASON_RATE_LIMIT: ErrorReason
ERROR_REASON_USER_NOT_FOUND: ErrorReason
ERROR_REASON_TARIFF_NOT_FOUND: ErrorReason
ERROR_REASON_API_KEY_NOT_FOUND: ErrorReason
