"""The AccountStore contract: issuing API keys and recognising them, and only them."""

from __future__ import annotations

import pytest

from core.ports import AccountStore, Principal
from tests.contract.conftest import Reopenable


async def test_a_created_key_authenticates_as_its_owner(account_store: AccountStore) -> None:
    key = await account_store.create_key("alice")

    principal = await account_store.authenticate(key)

    assert key.startswith("jg_")
    assert principal is not None
    assert principal.owner == "alice"
    assert principal.key_id and principal.key_id in key


async def test_every_key_is_new_and_names_its_own_owner(account_store: AccountStore) -> None:
    issued = [(owner, await account_store.create_key(owner)) for owner in ("a", "a", "b", "b")]

    principals = [(owner, await account_store.authenticate(key)) for owner, key in issued]

    assert len({key for _, key in issued}) == 4
    assert [p.owner if p else None for _, p in principals] == ["a", "a", "b", "b"]
    assert len({p.key_id for _, p in principals if p}) == 4


async def test_an_unknown_key_is_refused(account_store: AccountStore) -> None:
    await account_store.create_key("alice")

    assert await account_store.authenticate("jg_0123456789ab_" + "x" * 43) is None


@pytest.mark.parametrize(
    "malformed",
    ["", "jg_", "jg__secret", "Bearer jg_x", "nope", "jg_nothex00000_secret", "jg_" + "a" * 500],
)
async def test_a_malformed_key_is_refused(account_store: AccountStore, malformed: str) -> None:
    assert await account_store.authenticate(malformed) is None


async def test_a_key_with_a_tampered_secret_is_refused(account_store: AccountStore) -> None:
    key = await account_store.create_key("alice")
    flipped = "A" if key[-1] != "A" else "B"

    assert await account_store.authenticate(key[:-1] + flipped) is None
    assert await account_store.authenticate(key[:-1]) is None
    assert await account_store.authenticate(key + "x") is None


async def test_a_key_of_one_id_with_another_keys_secret_is_refused(
    account_store: AccountStore,
) -> None:
    alices = await account_store.create_key("alice")
    bobs = await account_store.create_key("bob")
    alice_id = alices.split("_")[1]
    bob_secret = bobs.split("_", 2)[2]

    assert await account_store.authenticate(f"jg_{alice_id}_{bob_secret}") is None


async def test_keys_survive_close_and_reopen(account_stores: Reopenable[AccountStore]) -> None:
    store = await account_stores.open()
    key = await store.create_key("alice")
    principal = await store.authenticate(key)
    await store.close()

    reopened = await account_stores.open()

    assert principal == Principal(owner="alice", key_id=principal.key_id if principal else "")
    assert await reopened.authenticate(key) == principal
