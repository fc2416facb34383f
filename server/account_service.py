"""The AccountService servicer: the caller's own balance and usage; and the conversions between
the account domain (core.billing) and its protobuf messages, which AdminService shares."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
from jobgate.v1 import account_pb2, account_service_pb2, account_service_pb2_grpc, model_pb2

from core.billing import ApiKeyInfo, Balance, Scope, Tariff, Usage
from core.catalog import Price, PriceUnit
from core.errors import InvalidArgument, NotFound, Reason
from core.ports import AccountStore
from server.auth import current_principal
from server.status import unary_errors

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_USAGE_DAYS = 30
MAX_USAGE_DAYS = 366
# Days times models: far more than any listing needs, and a bound on one response.
MAX_USAGE_ROWS = 10_000
# User and tariff ids appear in blob keys and resource names: short and plain.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SCOPE_OF_PROTO = {
    account_pb2.API_KEY_SCOPE_JOBS: Scope.JOBS,
    account_pb2.API_KEY_SCOPE_ADMIN: Scope.ADMIN,
}
_PROTO_OF_SCOPE = {scope: value for value, scope in _SCOPE_OF_PROTO.items()}


class AccountService(account_service_pb2_grpc.AccountServiceServicer):
    def __init__(self, accounts: AccountStore) -> None:
        self._accounts = accounts

    @unary_errors
    async def GetBalance(
        self, request: account_service_pb2.GetBalanceRequest, context: Context
    ) -> account_service_pb2.GetBalanceResponse:
        owner = current_principal().owner
        balance = await self._accounts.balance(owner) or Balance(owner, 0, 0)
        return account_service_pb2.GetBalanceResponse(balance=balance_to_proto(balance))

    @unary_errors
    async def ListUsage(
        self, request: account_service_pb2.ListUsageRequest, context: Context
    ) -> account_service_pb2.ListUsageResponse:
        since = usage_since(request.days, "days")
        usage = await self._accounts.usage(current_principal().owner, since, MAX_USAGE_ROWS)
        return account_service_pb2.ListUsageResponse(usage=[usage_to_proto(u) for u in usage])


def usage_since(days: int, field: str) -> date:
    """The first UTC day of a listing `days` long that ends today."""
    days = days or DEFAULT_USAGE_DAYS
    if not 1 <= days <= MAX_USAGE_DAYS:
        raise InvalidArgument(field, f"{field} must be 1 to {MAX_USAGE_DAYS}, not {days}")
    return datetime.now(UTC).date() - timedelta(days=days - 1)


def balance_to_proto(balance: Balance) -> account_pb2.Balance:
    return account_pb2.Balance(
        name=f"{user_name(balance.owner)}/balance",
        available_micros=balance.available_micros,
        held_micros=balance.held_micros,
    )


def usage_to_proto(usage: Usage) -> account_pb2.UsageRecord:
    return account_pb2.UsageRecord(
        day=usage.day.isoformat(),
        model=usage.model,
        job_count=usage.jobs,
        units=usage.units,
        cost_micros=usage.cost_micros,
    )


def key_to_proto(key: ApiKeyInfo) -> account_pb2.ApiKey:
    message = account_pb2.ApiKey(
        name=f"apiKeys/{key.key_id}",
        user=user_name(key.owner),
        scopes=sorted(_PROTO_OF_SCOPE[s] for s in key.scopes),
        revoked=key.revoked,
    )
    if key.last_used_time is not None:
        message.last_use_time.FromDatetime(key.last_used_time)
    return message


def scopes_from_proto(values: Any, field: str) -> list[Scope]:
    scopes = []
    for value in values:
        if value not in _SCOPE_OF_PROTO:
            raise InvalidArgument(field, f"{field}: unknown scope {value}")
        scopes.append(_SCOPE_OF_PROTO[value])
    return scopes or [Scope.JOBS]


def tariff_to_proto(tariff: Tariff) -> account_pb2.Tariff:
    return account_pb2.Tariff(
        name=tariff_name(tariff.name),
        prices=[
            account_pb2.ModelPrice(
                model=model,
                price=model_pb2.Price(
                    per_job_micros=price.per_job_micros,
                    per_unit_micros=price.per_unit_micros,
                    unit=_unit_to_proto(price.unit),
                ),
            )
            for model, price in sorted(tariff.prices.items())
        ],
        max_concurrent_jobs=tariff.max_concurrent_jobs,
        submits_per_minute=tariff.submits_per_minute,
    )


def tariff_from_proto(message: account_pb2.Tariff, field: str) -> Tariff:
    name = parse_name(message.name, "tariffs/", f"{field}.name")
    prices: dict[str, Price] = {}
    for i, entry in enumerate(message.prices):
        where = f"{field}.prices[{i}]"
        if not entry.model:
            raise InvalidArgument(f"{where}.model", f"{where}.model is required")
        if entry.model in prices:
            raise InvalidArgument(f"{where}.model", f"{entry.model} is priced twice")
        price = entry.price
        if price.per_job_micros < 0 or price.per_unit_micros < 0:
            raise InvalidArgument(f"{where}.price", f"{where}: prices must not be negative")
        if price.unit not in model_pb2.Price.Unit.values():
            raise InvalidArgument(f"{where}.price.unit", f"{where}: unknown unit {price.unit}")
        unit = _unit_from_proto(price.unit)
        if unit is PriceUnit.NONE and price.per_unit_micros:
            raise InvalidArgument(f"{where}.price.unit", f"{where}: per_unit_micros needs a unit")
        prices[entry.model] = Price(price.per_job_micros, price.per_unit_micros, unit)
    for limit in ("max_concurrent_jobs", "submits_per_minute"):
        if getattr(message, limit) < 0:
            raise InvalidArgument(f"{field}.{limit}", f"{field}.{limit} must not be negative")
    return Tariff(name, prices, message.max_concurrent_jobs, message.submits_per_minute)


def user_name(owner: str) -> str:
    return f"users/{owner}"


def tariff_name(name: str) -> str:
    return f"tariffs/{name}"


def parse_name(name: str, prefix: str, field: str) -> str:
    """The id in `{prefix}{id}`; InvalidArgument naming `field` when it is not one."""
    if not name.startswith(prefix) or not _ID.fullmatch(name[len(prefix) :]):
        raise InvalidArgument(
            field, f"{field} must look like {prefix}{{id}} (letters, digits, . _ -), not {name!r}"
        )
    return name[len(prefix) :]


def user_not_found(owner: str) -> NotFound:
    return NotFound(f"no user {user_name(owner)}", reason=Reason.USER_NOT_FOUND)


def _unit_to_proto(unit: PriceUnit) -> model_pb2.Price.Unit.ValueType:
    if unit is PriceUnit.NONE:
        return model_pb2.Price.UNIT_UNSPECIFIED
    return model_pb2.Price.Unit.Value(f"UNIT_{unit.value}")


def _unit_from_proto(value: model_pb2.Price.Unit.ValueType) -> PriceUnit:
    if value == model_pb2.Price.UNIT_UNSPECIFIED:
        return PriceUnit.NONE
    return PriceUnit(model_pb2.Price.Unit.Name(value).removeprefix("UNIT_"))
