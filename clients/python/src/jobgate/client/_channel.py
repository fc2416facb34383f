"""What every client needs to open its channel and authenticate its calls."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

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


Stub = TypeVar("Stub")


class _ChannelOwner:
    """The configuration, the channel (made on the first call) and the stubs over it."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        api_key: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, so sharing it is safe
    ) -> None:
        self._config = ClientConfig.create(target, api_key, credentials, call_timeout, retry)
        self._channel: Any = None
        self._stubs: dict[type[Any], Any] = {}

    def _new_channel(self) -> Any:
        raise NotImplementedError

    def _stub_of(self, stub_type: type[Stub]) -> Stub:
        stub = self._stubs.get(stub_type)
        if stub is None:
            if self._channel is None:
                self._channel = self._new_channel()
            stub = self._stubs[stub_type] = stub_type(self._channel)
        return stub

    def _forget_channel(self) -> Any:
        channel, self._channel = self._channel, None
        self._stubs.clear()
        return channel


class SyncChannelOwner(_ChannelOwner):
    """A blocking client's channel: `with Client(...) as client:`, or call close()."""

    def _new_channel(self) -> grpc.Channel:
        return self._config.sync_channel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        channel = self._forget_channel()
        if channel is not None:
            channel.close()


class AsyncChannelOwner(_ChannelOwner):
    """An asyncio client's channel: `async with Client(...) as client:`, or await close().

    A grpc.aio channel belongs to the event loop it is made in: made on the first call, it lands
    in the loop the client is used in, wherever the client itself was made."""

    def _new_channel(self) -> grpc.aio.Channel:
        return self._config.aio_channel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        channel = self._forget_channel()
        if channel is not None:
            await channel.close()
