"""AdminClient and AsyncAdminClient: jobgate's AdminService (users, API keys, tariffs, balances)
for keys with the `admin` scope. `jobgate admin …` is built on AdminClient.

Users, tariffs and keys may be named by id (`alice`) or by resource name (`users/alice`).
Calls that may safely repeat are retried while the service is unavailable: a top-up always
carries a request_id (a fresh UUID unless given), so its retries add money once. Creating a user
or a key, and refunding, are not retried: a repeat would fail, or issue a second key.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

import grpc
from google.protobuf.message import Message

from jobgate.client._channel import AsyncChannelOwner, SyncChannelOwner
from jobgate.client._errors import RpcFailure, from_rpc_error
from jobgate.client._messages import job_name
from jobgate.client._retry import NO_RETRY, Backoff, RetryPolicy
from jobgate.v1 import account_pb2, admin_service_pb2, admin_service_pb2_grpc, model_pb2

Response = TypeVar("Response", bound=Message)

SCOPES = {"jobs": account_pb2.API_KEY_SCOPE_JOBS, "admin": account_pb2.API_KEY_SCOPE_ADMIN}
UNITS = {
    "": model_pb2.Price.UNIT_UNSPECIFIED,
    "image": model_pb2.Price.UNIT_IMAGE,
    "output_second": model_pb2.Price.UNIT_OUTPUT_SECOND,
    "thousand_tokens": model_pb2.Price.UNIT_THOUSAND_TOKENS,
}


@dataclass(frozen=True)
class ModelPrice:
    """A model's price on a tariff, in micros; `unit` is "", "image", "output_second" or
    "thousand_tokens"."""

    per_job_micros: int = 0
    per_unit_micros: int = 0
    unit: str = ""


def _name(collection: str, value: str) -> str:
    return value if value.startswith(collection) else f"{collection}{value}"


def _tariff(
    name: str, prices: Mapping[str, ModelPrice], max_concurrent_jobs: int, submits_per_minute: int
) -> account_pb2.Tariff:
    entries = []
    for model, price in sorted(prices.items()):
        if price.unit not in UNITS:
            raise ValueError(f"unknown price unit {price.unit!r}; one of {', '.join(UNITS)}")
        entries.append(
            account_pb2.ModelPrice(
                model=model,
                price=model_pb2.Price(
                    per_job_micros=price.per_job_micros,
                    per_unit_micros=price.per_unit_micros,
                    unit=UNITS[price.unit],
                ),
            )
        )
    return account_pb2.Tariff(
        name=_name("tariffs/", name),
        prices=entries,
        max_concurrent_jobs=max_concurrent_jobs,
        submits_per_minute=submits_per_minute,
    )


class _Requests:
    """The AdminService requests both clients send, with whether each may be retried."""

    @staticmethod
    def create_user(user: str, tariff: str | None) -> admin_service_pb2.CreateUserRequest:
        return admin_service_pb2.CreateUserRequest(
            user=account_pb2.User(
                name=_name("users/", user), tariff=_name("tariffs/", tariff) if tariff else ""
            )
        )

    @staticmethod
    def set_user_tariff(user: str, tariff: str | None) -> admin_service_pb2.UpdateUserTariffRequest:
        return admin_service_pb2.UpdateUserTariffRequest(
            user=_name("users/", user), tariff=_name("tariffs/", tariff) if tariff else ""
        )

    @staticmethod
    def create_key(user: str, scopes: Collection[str]) -> admin_service_pb2.CreateApiKeyRequest:
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise ValueError(f"unknown scope(s) {', '.join(unknown)}; one of {', '.join(SCOPES)}")
        return admin_service_pb2.CreateApiKeyRequest(
            user=_name("users/", user), scopes=[SCOPES[s] for s in sorted(scopes)]
        )

    @staticmethod
    def top_up(
        user: str, amount_micros: int, request_id: str | None
    ) -> admin_service_pb2.TopUpRequest:
        return admin_service_pb2.TopUpRequest(
            user=_name("users/", user),
            amount_micros=amount_micros,
            request_id=request_id or str(uuid.uuid4()),
        )


class AdminClient(SyncChannelOwner):
    """AdminService for blocking code. Use it as `with AdminClient(address, admin_key):`."""

    @property
    def _stub(self) -> admin_service_pb2_grpc.AdminServiceStub:
        return self._stub_of(admin_service_pb2_grpc.AdminServiceStub)

    def create_user(self, user: str, tariff: str | None = None) -> account_pb2.User:
        request = _Requests.create_user(user, tariff)
        return self._call(self._stub.CreateUser, request, NO_RETRY).user

    def set_user_tariff(self, user: str, tariff: str | None) -> account_pb2.User:
        """Puts the user on `tariff`; None for the default (catalog prices, no limits)."""
        request = _Requests.set_user_tariff(user, tariff)
        return self._call(self._stub.UpdateUserTariff, request, self._config.retry).user

    def create_key(
        self, user: str, scopes: Collection[str] = ("jobs",)
    ) -> admin_service_pb2.CreateApiKeyResponse:
        """Issues a key; `.key` is the full key, shown this once."""
        return self._call(self._stub.CreateApiKey, _Requests.create_key(user, scopes), NO_RETRY)

    def list_keys(self, user: str) -> list[account_pb2.ApiKey]:
        request = admin_service_pb2.ListApiKeysRequest(user=_name("users/", user))
        return list(self._call(self._stub.ListApiKeys, request, self._config.retry).api_keys)

    def revoke_key(self, key: str) -> account_pb2.ApiKey:
        """Revokes a key named by id (the part after `jg_`) or `apiKeys/ID`."""
        request = admin_service_pb2.RevokeApiKeyRequest(name=_name("apiKeys/", key))
        return self._call(self._stub.RevokeApiKey, request, self._config.retry).api_key

    def set_tariff(
        self,
        name: str,
        prices: Mapping[str, ModelPrice] | None = None,
        *,
        max_concurrent_jobs: int = 0,
        submits_per_minute: int = 0,
    ) -> account_pb2.Tariff:
        tariff = _tariff(name, prices or {}, max_concurrent_jobs, submits_per_minute)
        request = admin_service_pb2.SetTariffRequest(tariff=tariff)
        return self._call(self._stub.SetTariff, request, self._config.retry).tariff

    def get_tariff(self, name: str) -> account_pb2.Tariff:
        request = admin_service_pb2.GetTariffRequest(name=_name("tariffs/", name))
        return self._call(self._stub.GetTariff, request, self._config.retry).tariff

    def top_up(
        self, user: str, amount_micros: int, *, request_id: str | None = None
    ) -> account_pb2.Balance:
        request = _Requests.top_up(user, amount_micros, request_id)
        return self._call(self._stub.TopUp, request, self._config.retry).balance

    def balance(self, user: str) -> account_pb2.Balance:
        request = admin_service_pb2.GetUserBalanceRequest(user=_name("users/", user))
        return self._call(self._stub.GetUserBalance, request, self._config.retry).balance

    def usage(self, user: str, days: int = 30) -> list[account_pb2.UsageRecord]:
        request = admin_service_pb2.ListUserUsageRequest(user=_name("users/", user), days=days)
        return list(self._call(self._stub.ListUserUsage, request, self._config.retry).usage)

    def refund(self, job: str) -> int:
        """Gives back what the job was charged; the micros refunded."""
        request = admin_service_pb2.RefundJobRequest(job=job_name(job))
        return self._call(self._stub.RefundJob, request, NO_RETRY).refunded_micros

    def _call(
        self, method: Callable[..., Response], request: Message, retry: RetryPolicy
    ) -> Response:
        backoff = Backoff(retry)
        while True:
            try:
                return method(
                    request, metadata=self._config.metadata, timeout=self._config.call_timeout
                )
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(cast(RpcFailure, rpc_error))
            time.sleep(backoff.pause_after(error))


class AsyncAdminClient(AsyncChannelOwner):
    """AdminService for asyncio code; the same methods as AdminClient, awaited."""

    @property
    def _stub(self) -> admin_service_pb2_grpc.AdminServiceStub:
        return self._stub_of(admin_service_pb2_grpc.AdminServiceStub)

    async def create_user(self, user: str, tariff: str | None = None) -> account_pb2.User:
        request = _Requests.create_user(user, tariff)
        return (await self._call(self._stub.CreateUser, request, NO_RETRY)).user

    async def set_user_tariff(self, user: str, tariff: str | None) -> account_pb2.User:
        request = _Requests.set_user_tariff(user, tariff)
        return (await self._call(self._stub.UpdateUserTariff, request, self._config.retry)).user

    async def create_key(
        self, user: str, scopes: Collection[str] = ("jobs",)
    ) -> admin_service_pb2.CreateApiKeyResponse:
        request = _Requests.create_key(user, scopes)
        return await self._call(self._stub.CreateApiKey, request, NO_RETRY)

    async def list_keys(self, user: str) -> list[account_pb2.ApiKey]:
        request = admin_service_pb2.ListApiKeysRequest(user=_name("users/", user))
        response = await self._call(self._stub.ListApiKeys, request, self._config.retry)
        return list(response.api_keys)

    async def revoke_key(self, key: str) -> account_pb2.ApiKey:
        request = admin_service_pb2.RevokeApiKeyRequest(name=_name("apiKeys/", key))
        return (await self._call(self._stub.RevokeApiKey, request, self._config.retry)).api_key

    async def set_tariff(
        self,
        name: str,
        prices: Mapping[str, ModelPrice] | None = None,
        *,
        max_concurrent_jobs: int = 0,
        submits_per_minute: int = 0,
    ) -> account_pb2.Tariff:
        tariff = _tariff(name, prices or {}, max_concurrent_jobs, submits_per_minute)
        request = admin_service_pb2.SetTariffRequest(tariff=tariff)
        return (await self._call(self._stub.SetTariff, request, self._config.retry)).tariff

    async def get_tariff(self, name: str) -> account_pb2.Tariff:
        request = admin_service_pb2.GetTariffRequest(name=_name("tariffs/", name))
        return (await self._call(self._stub.GetTariff, request, self._config.retry)).tariff

    async def top_up(
        self, user: str, amount_micros: int, *, request_id: str | None = None
    ) -> account_pb2.Balance:
        request = _Requests.top_up(user, amount_micros, request_id)
        return (await self._call(self._stub.TopUp, request, self._config.retry)).balance

    async def balance(self, user: str) -> account_pb2.Balance:
        request = admin_service_pb2.GetUserBalanceRequest(user=_name("users/", user))
        return (await self._call(self._stub.GetUserBalance, request, self._config.retry)).balance

    async def usage(self, user: str, days: int = 30) -> list[account_pb2.UsageRecord]:
        request = admin_service_pb2.ListUserUsageRequest(user=_name("users/", user), days=days)
        return list((await self._call(self._stub.ListUserUsage, request, self._config.retry)).usage)

    async def refund(self, job: str) -> int:
        request = admin_service_pb2.RefundJobRequest(job=job_name(job))
        return (await self._call(self._stub.RefundJob, request, NO_RETRY)).refunded_micros

    async def _call(
        self, method: Callable[..., Awaitable[Response]], request: Message, retry: RetryPolicy
    ) -> Response:
        backoff = Backoff(retry)
        while True:
            try:
                return await method(
                    request, metadata=self._config.metadata, timeout=self._config.call_timeout
                )
            except grpc.aio.AioRpcError as rpc_error:
                error = from_rpc_error(rpc_error)
            await asyncio.sleep(backoff.pause_after(error))
