"""API keys: one interceptor checks `authorization: Bearer <key>` on every call of jobgate's
services, and that the key has the scope the service needs (`jobs`: JobService and
AccountService; `admin`: AdminService).

The verified Principal reaches the servicer through a context variable that the wrapped method
sets itself, in the task that runs the call: whatever the interceptor's own context, the handler
sees it. Keys are never logged; the account store compares them in constant time.

Verified keys are remembered for a few seconds (by their SHA-256, never in clear): each job costs
two calls (CreateJob, WatchJob), and a store lookup per call was a measurable share of the
server's CPU. A key revoked (or a tariff changed) through this server's AdminService drops its
cache entries at once; on other replicas it takes effect within PRINCIPAL_TTL_SECONDS.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

from core.billing import Scope
from core.errors import PermissionDenied, Reason, Unauthenticated
from core.ports import AccountStore, Principal
from server import status

# The scope each guarded service needs, by its methods' path prefix.
SCOPE_OF_SERVICE = {
    "/jobgate.v1.JobService/": Scope.JOBS,
    "/jobgate.v1.AccountService/": Scope.JOBS,
    "/jobgate.v1.AdminService/": Scope.ADMIN,
}
AUTHORIZATION = "authorization"
BEARER = "bearer "
PRINCIPAL_TTL_SECONDS = 10.0
PRINCIPAL_CACHE_SIZE = 10_000

_principal: ContextVar[Principal] = ContextVar("jobgate_principal")

Context = grpc.aio.ServicerContext[Any, Any]
UnaryBehaviour = Callable[[Any, Context], Awaitable[Any]]
StreamBehaviour = Callable[[Any, Context], AsyncIterator[Any]]


def current_principal() -> Principal:
    """The caller of the RPC being served. Only valid inside a guarded service's method."""
    try:
        return _principal.get()
    except LookupError:
        raise RuntimeError("no principal: the call did not pass ApiKeyInterceptor") from None


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Guards every method of jobgate's services, unary or streaming; other services (health,
    reflection) stay open."""

    def __init__(self, accounts: AccountStore) -> None:
        self._accounts = accounts
        self._principals = _PrincipalCache(PRINCIPAL_TTL_SECONDS, PRINCIPAL_CACHE_SIZE)
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if (guarded := self._handlers.get(method)) is not None:
            return guarded
        handler = await continuation(handler_call_details)
        scope = _scope_of(method)
        if handler is None or scope is None:
            return handler
        # Handlers are the same for every call of a method: wrap each once.
        self._handlers[method] = self._guard(handler, scope)
        return self._handlers[method]

    def forget_key(self, key_id: str) -> None:
        """Drops the key's cached principal: a revocation takes effect at once here."""
        self._principals.drop(lambda principal: principal.key_id == key_id)

    def forget_owner(self, owner: str) -> None:
        """Drops the owner's cached principals: a new tariff takes effect at once here."""
        self._principals.drop(lambda principal: principal.owner == owner)

    def forget_tariff(self, name: str) -> None:
        """Drops the cached principals on a tariff: its new terms take effect at once here."""
        self._principals.drop(lambda principal: principal.tariff.name == name)

    def _guard(self, handler: grpc.RpcMethodHandler, scope: Scope) -> grpc.RpcMethodHandler:
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, scope), **codecs
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, scope), **codecs
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, scope), **codecs
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(handler.stream_stream, scope), **codecs
        )

    def _unary(self, behaviour: UnaryBehaviour, scope: Scope) -> UnaryBehaviour:
        async def authenticated(request: Any, context: Context) -> Any:
            _principal.set(await self._authenticate(context, scope))
            return await behaviour(request, context)

        return authenticated

    def _stream(self, behaviour: StreamBehaviour, scope: Scope) -> StreamBehaviour:
        async def authenticated(request: Any, context: Context) -> AsyncIterator[Any]:
            _principal.set(await self._authenticate(context, scope))
            async for response in behaviour(request, context):
                yield response

        return authenticated

    async def _authenticate(self, context: Context, scope: Scope) -> Principal:
        """The caller's principal; aborts the call with UNAUTHENTICATED when there is none, and
        with PERMISSION_DENIED when its key lacks `scope`."""
        try:
            key = _bearer_key(context.invocation_metadata() or ())
            digest = hashlib.sha256(key.encode()).digest()
            principal = self._principals.get(digest)
            if principal is None:
                principal = await self._accounts.authenticate(key)
                if principal is None:
                    raise Unauthenticated("the API key is not valid", reason=Reason.API_KEY_INVALID)
                self._principals.put(digest, principal)
            if scope not in principal.scopes:
                raise PermissionDenied(
                    f"this API key lacks the `{scope.value}` scope this call needs",
                    reason=Reason.API_KEY_SCOPE_MISSING,
                )
        except Exception as error:
            await status.abort(context, error)
        return principal


def _scope_of(method: str) -> Scope | None:
    for prefix, scope in SCOPE_OF_SERVICE.items():
        if method.startswith(prefix):
            return scope
    return None


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


class _PrincipalCache:
    """Recently verified keys' principals, by key digest, each kept `ttl` seconds; the oldest
    entry goes first when full."""

    def __init__(self, ttl: float, size: int) -> None:
        self._ttl = ttl
        self._size = size
        self._entries: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()

    def get(self, digest: bytes) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        expires, principal = entry
        if expires < time.monotonic():
            del self._entries[digest]
            return None
        return principal

    def drop(self, matches: Callable[[Principal], bool]) -> None:
        """Forgets every entry whose principal `matches`: rare (an admin's change), so a scan."""
        for digest in [d for d, (_, p) in self._entries.items() if matches(p)]:
            del self._entries[digest]

    def put(self, digest: bytes, principal: Principal) -> None:
        self._entries[digest] = (time.monotonic() + self._ttl, principal)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
