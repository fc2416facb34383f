"""Accounts that jobgate makes for itself: the embedded mode's admin key and benchmark keys.

Their users are on the `local-free` tariff: the built-in local models (which run on this
machine and call no paid provider) cost nothing and nothing is limited, so their jobs take the
hot path that needs no hold. Every other model costs its catalog price against the balance.
"""

from __future__ import annotations

from collections.abc import Collection

from core.billing import Scope, Tariff
from core.catalog import Catalog, Price
from core.ports import AccountStore

LOCAL_FREE_TARIFF = "local-free"
LOCAL_PROVIDER = "local"


def local_free_tariff(catalog: Catalog) -> Tariff:
    return Tariff(
        LOCAL_FREE_TARIFF,
        prices={spec.id: Price() for spec in catalog if spec.provider == LOCAL_PROVIDER},
    )


async def local_free_key(
    accounts: AccountStore,
    catalog: Catalog,
    owner: str,
    scopes: Collection[Scope] = (Scope.JOBS,),
    welcome_micros: int = 0,
) -> str:
    """A new key of `owner`, who is put on the `local-free` tariff and, once, given
    `welcome_micros` for other models."""
    await accounts.put_tariff(local_free_tariff(catalog))
    if not await accounts.create_user(owner, LOCAL_FREE_TARIFF):
        await accounts.assign_tariff(owner, LOCAL_FREE_TARIFF)
    if welcome_micros:
        await accounts.top_up(owner, welcome_micros, reference=f"{owner}:welcome")
    return await accounts.create_key(owner, scopes)
