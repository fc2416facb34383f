"""API keys: one interceptor checks `authorization: Bearer <key>` on every JobService call.

The verified Principal reaches the servicer through a context variable that the wrapped method
sets itself, in the task that runs the call: whatever the interceptor's own context, the handler
sees it. Keys are never logged; the account store compares them in constant time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

from core.errors import Reason, Unauthenticated
from core.ports import AccountStore, Principal
from server import status

SERVICE_PREFIX = "/jobgate.v1.JobService/"
AUTHORIZATION = "authorization"
BEARER = "bearer "

_principal: ContextVar[Principal] = ContextVar("jobgate_principal")

Context = grpc.aio.ServicerContext[Any, Any]
UnaryBehaviour = Callable[[Any, Context], Awaitable[Any]]
StreamBehaviour = Callable[[Any, Context], AsyncIterator[Any]]


def current_principal() -> Principal:
    """The caller of the RPC being served. Only valid inside a JobService method."""
    try:
        return _principal.get()
    except LookupError:
        raise RuntimeError("no principal: the call did not pass ApiKeyInterceptor") from None


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Guards every JobService method, unary or streaming; other services (health,
    reflection) stay open."""

    def __init__(self, accounts: AccountStore) -> None:
        self._accounts = accounts

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(SERVICE_PREFIX):
            return handler
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary), **codecs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream), **codecs
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._unary(handler.stream_unary), **codecs)
        return grpc.stream_stream_rpc_method_handler(self._stream(handler.stream_stream), **codecs)

    def _unary(self, behaviour: UnaryBehaviour) -> UnaryBehaviour:
        async def authenticated(request: Any, context: Context) -> Any:
            _principal.set(await self._authenticate(context))
            return await behaviour(request, context)

        return authenticated

    def _stream(self, behaviour: StreamBehaviour) -> StreamBehaviour:
        async def authenticated(request: Any, context: Context) -> AsyncIterator[Any]:
            _principal.set(await self._authenticate(context))
            async for response in behaviour(request, context):
                yield response

        return authenticated

    async def _authenticate(self, context: Context) -> Principal:
        """The caller's principal; aborts the call with UNAUTHENTICATED when there is none."""
        try:
            key = _bearer_key(context.invocation_metadata() or ())
            principal = await self._accounts.authenticate(key)
            if principal is None:
                raise Unauthenticated("the API key is not valid", reason=Reason.API_KEY_INVALID)
        except Exception as error:
            await status.abort(context, error)
        return principal


def _bearer_key(metadata: Any) -> str:
    for key, value in metadata:
        if key == AUTHORIZATION:
            text = value if isinstance(value, str) else value.decode("latin-1")
            if text[: len(BEARER)].lower() == BEARER and text[len(BEARER) :].strip():
                return text[len(BEARER) :].strip()
            break
    raise Unauthenticated(
        "send the API key as `authorization: Bearer <key>` metadata",
        reason=Reason.API_KEY_MISSING,
    )
