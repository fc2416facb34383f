"""What both clients need to open their channel and authenticate their calls."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import grpc

from jobgate.client._retry import RetryPolicy

DEFAULT_TARGET = "localhost:50051"
API_KEY_ENV = "JOBGATE_API_KEY"
DEFAULT_CALL_TIMEOUT = 30.0
# The channel tries to reconnect soon after a dropped connection instead of gRPC's default of
# about a second, so that watches and retried calls resume quickly.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 3000),
)


@dataclass(frozen=True)
class ClientConfig:
    """Where the service is and how every call goes to it."""

    target: str
    # Kept out of repr so that the API key never ends up in logs or tracebacks.
    metadata: tuple[tuple[str, str], ...] = field(repr=False)
    credentials: grpc.ChannelCredentials | None
    call_timeout: float
    retry: RetryPolicy

    @classmethod
    def create(
        cls,
        target: str,
        api_key: str | None,
        credentials: grpc.ChannelCredentials | None,
        call_timeout: float,
        retry: RetryPolicy,
    ) -> ClientConfig:
        """Validates the arguments; the key falls back to $JOBGATE_API_KEY."""
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        if not key.strip():
            raise ValueError(f"an API key is required: pass api_key= or set ${API_KEY_ENV}")
        if not target:
            raise ValueError("a target is required, e.g. localhost:50051")
        if call_timeout <= 0:
            raise ValueError(f"call_timeout must be positive, not {call_timeout}")
        metadata = (("authorization", f"Bearer {key.strip()}"),)
        return cls(target, metadata, credentials, call_timeout, retry)

    def sync_channel(self) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        return grpc.secure_channel(self.target, self.credentials, options=CHANNEL_OPTIONS)

    def aio_channel(self) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(self.target, self.credentials, options=CHANNEL_OPTIONS)
