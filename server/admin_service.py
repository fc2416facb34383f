"""The AdminService servicer: users, API keys, tariffs and balances, for keys with `admin`.

Changes that alter what a cached principal says (a revoked key, a user's new tariff, a tariff's
new terms) drop the affected entries of this server's principal cache, so they apply at once
here; other replicas see them within the cache's TTL (server.auth.PRINCIPAL_TTL_SECONDS).
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import grpc
from jobgate.v1 import account_pb2, admin_service_pb2, admin_service_pb2_grpc

from core.adapters.api_keys import parse_key
from core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Reason
from core.jobs import job_id_from_name
from core.ports import AccountStore
from server.account_service import (
    MAX_USAGE_ROWS,
    balance_to_proto,
    key_to_proto,
    parse_name,
    scopes_from_proto,
    tariff_from_proto,
    tariff_name,
    tariff_to_proto,
    usage_since,
    usage_to_proto,
    user_name,
    user_not_found,
)
from server.status import unary_errors

Context = grpc.aio.ServicerContext[Any, Any]
MAX_REQUEST_ID_LENGTH = 128


class PrincipalCache(Protocol):
    """What AdminService needs of server.auth.ApiKeyInterceptor."""

    def forget_key(self, key_id: str) -> None: ...

    def forget_owner(self, owner: str) -> None: ...

    def forget_tariff(self, name: str) -> None: ...


class AdminService(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, accounts: AccountStore, principals: PrincipalCache) -> None:
        self._accounts = accounts
        self._principals = principals

    @unary_errors
    async def CreateUser(
        self, request: admin_service_pb2.CreateUserRequest, context: Context
    ) -> admin_service_pb2.CreateUserResponse:
        owner = parse_name(request.user.name, "users/", "user.name")
        tariff = _optional_tariff(request.user.tariff, "user.tariff")
        if not await self._accounts.create_user(owner, tariff):
            raise AlreadyExists(
                f"user {request.user.name} exists already", reason=Reason.USER_ALREADY_EXISTS
            )
        return admin_service_pb2.CreateUserResponse(user=_user(owner, tariff))

    @unary_errors
    async def UpdateUserTariff(
        self, request: admin_service_pb2.UpdateUserTariffRequest, context: Context
    ) -> admin_service_pb2.UpdateUserTariffResponse:
        owner = parse_name(request.user, "users/", "user")
        tariff = _optional_tariff(request.tariff, "tariff")
        await self._accounts.assign_tariff(owner, tariff)
        self._principals.forget_owner(owner)
        return admin_service_pb2.UpdateUserTariffResponse(user=_user(owner, tariff))

    @unary_errors
    async def CreateApiKey(
        self, request: admin_service_pb2.CreateApiKeyRequest, context: Context
    ) -> admin_service_pb2.CreateApiKeyResponse:
        owner = parse_name(request.user, "users/", "user")
        scopes = scopes_from_proto(request.scopes, "scopes")
        key = await self._accounts.create_key(owner, scopes)
        parsed = parse_key(key)
        assert parsed is not None  # the store issues well-formed keys
        info = next(k for k in await self._accounts.list_keys(owner) if k.key_id == parsed.key_id)
        return admin_service_pb2.CreateApiKeyResponse(api_key=key_to_proto(info), key=key)

    @unary_errors
    async def ListApiKeys(
        self, request: admin_service_pb2.ListApiKeysRequest, context: Context
    ) -> admin_service_pb2.ListApiKeysResponse:
        owner = parse_name(request.user, "users/", "user")
        keys = await self._accounts.list_keys(owner)
        return admin_service_pb2.ListApiKeysResponse(api_keys=[key_to_proto(k) for k in keys])

    @unary_errors
    async def RevokeApiKey(
        self, request: admin_service_pb2.RevokeApiKeyRequest, context: Context
    ) -> admin_service_pb2.RevokeApiKeyResponse:
        key_id = parse_name(request.name, "apiKeys/", "name")
        revoked = await self._accounts.revoke_key(key_id)
        if revoked is None:
            raise NotFound(f"no API key {request.name}", reason=Reason.API_KEY_NOT_FOUND)
        self._principals.forget_key(key_id)
        return admin_service_pb2.RevokeApiKeyResponse(api_key=key_to_proto(revoked))

    @unary_errors
    async def SetTariff(
        self, request: admin_service_pb2.SetTariffRequest, context: Context
    ) -> admin_service_pb2.SetTariffResponse:
        tariff = tariff_from_proto(request.tariff, "tariff")
        await self._accounts.put_tariff(tariff)
        self._principals.forget_tariff(tariff.name)
        return admin_service_pb2.SetTariffResponse(tariff=tariff_to_proto(tariff))

    @unary_errors
    async def GetTariff(
        self, request: admin_service_pb2.GetTariffRequest, context: Context
    ) -> admin_service_pb2.GetTariffResponse:
        name = parse_name(request.name, "tariffs/", "name")
        tariff = await self._accounts.get_tariff(name)
        if tariff is None:
            raise NotFound(f"no tariff {request.name}", reason=Reason.TARIFF_NOT_FOUND)
        return admin_service_pb2.GetTariffResponse(tariff=tariff_to_proto(tariff))

    @unary_errors
    async def TopUp(
        self, request: admin_service_pb2.TopUpRequest, context: Context
    ) -> admin_service_pb2.TopUpResponse:
        owner = parse_name(request.user, "users/", "user")
        if request.amount_micros <= 0:
            raise InvalidArgument("amount_micros", "amount_micros must be positive")
        if len(request.request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidArgument(
                "request_id", f"request_id is longer than {MAX_REQUEST_ID_LENGTH} characters"
            )
        # A top-up without a request_id is its own: a fresh reference never repeats.
        reference = f"{owner}:{request.request_id or uuid.uuid4().hex}"
        balance = await self._accounts.top_up(owner, request.amount_micros, reference)
        return admin_service_pb2.TopUpResponse(balance=balance_to_proto(balance))

    @unary_errors
    async def GetUserBalance(
        self, request: admin_service_pb2.GetUserBalanceRequest, context: Context
    ) -> admin_service_pb2.GetUserBalanceResponse:
        owner = parse_name(request.user, "users/", "user")
        balance = await self._accounts.balance(owner)
        if balance is None:
            raise user_not_found(owner)
        return admin_service_pb2.GetUserBalanceResponse(balance=balance_to_proto(balance))

    @unary_errors
    async def ListUserUsage(
        self, request: admin_service_pb2.ListUserUsageRequest, context: Context
    ) -> admin_service_pb2.ListUserUsageResponse:
        owner = parse_name(request.user, "users/", "user")
        since = usage_since(request.days, "days")
        if await self._accounts.balance(owner) is None:
            raise user_not_found(owner)
        usage = await self._accounts.usage(owner, since, MAX_USAGE_ROWS)
        return admin_service_pb2.ListUserUsageResponse(usage=[usage_to_proto(u) for u in usage])

    @unary_errors
    async def RefundJob(
        self, request: admin_service_pb2.RefundJobRequest, context: Context
    ) -> admin_service_pb2.RefundJobResponse:
        job_id = job_id_from_name(request.job)
        if job_id is None:
            raise InvalidArgument("job", f"job must look like jobs/{{job}}, not {request.job!r}")
        refunded = await self._accounts.refund(job_id)
        if refunded is None:
            raise FailedPrecondition(
                f"{request.job} was not charged, or was refunded already",
                reason=Reason.NOTHING_TO_REFUND,
            )
        return admin_service_pb2.RefundJobResponse(refunded_micros=refunded)


def _optional_tariff(name: str, field: str) -> str | None:
    return parse_name(name, "tariffs/", field) if name else None


def _user(owner: str, tariff: str | None) -> account_pb2.User:
    return account_pb2.User(name=user_name(owner), tariff=tariff_name(tariff) if tariff else "")
