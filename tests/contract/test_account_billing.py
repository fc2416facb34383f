"""The AccountStore contract for money: users, tariffs, scopes, holds, settlement and the ledger.

Run against every account store (tests/contract/conftest.py): the embedded SQLite one and
PostgreSQL for real. After every change of money the balance must equal the sum of the ledger.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from core.billing import (
    DEFAULT_TARIFF,
    Balance,
    Ending,
    HoldRequest,
    HoldTerms,
    Scope,
    Settlement,
    Tariff,
)
from core.catalog import Price, PriceUnit
from core.errors import FailedPrecondition, NotFound, Reason, ResourceExhausted
from core.ports import AccountStore
from tests.contract.conftest import Reopenable

# 1 currency unit per job and 10 000 micros an image, up to 4 images: a hold of 1 040 000.
IMAGE_TERMS = HoldTerms("acme/image", 1_000_000, 10_000, PriceUnit.IMAGE, 4)
PAID = Tariff("paid")


def hold_request(
    owner: str,
    terms: HoldTerms = IMAGE_TERMS,
    tariff: Tariff = PAID,
    request_id: str | None = None,
) -> HoldRequest:
    return HoldRequest(owner, uuid.uuid4().hex, request_id, terms, tariff)


async def assert_ledger_matches(store: AccountStore, owner: str) -> Balance:
    """The balance row equals what the ledger's entries add up to, and is never negative."""
    balance = await store.balance(owner)
    assert balance is not None
    totals = {"TOP_UP": 0, "HOLD": 0, "CAPTURE": 0, "RELEASE": 0, "REFUND": 0}
    totals.update(await store.ledger_totals(owner))
    available = totals["TOP_UP"] - totals["HOLD"] + totals["RELEASE"] + totals["REFUND"]
    held = totals["HOLD"] - totals["CAPTURE"] - totals["RELEASE"]
    assert (balance.available_micros, balance.held_micros) == (available, held)
    assert balance.available_micros >= 0 and balance.held_micros >= 0
    return balance


async def funded(store: AccountStore, owner: str, micros: int) -> None:
    await store.create_user(owner)
    await store.top_up(owner, micros, reference=f"seed-{owner}")


async def test_a_new_key_runs_jobs_and_a_new_user_is_on_the_default_tariff(
    account_store: AccountStore,
) -> None:
    key = await account_store.create_key("alice")

    principal = await account_store.authenticate(key)

    assert principal is not None
    assert principal.scopes == {Scope.JOBS}
    assert principal.tariff == DEFAULT_TARIFF
    assert await account_store.balance("alice") == Balance("alice", 0, 0)


async def test_a_key_carries_the_scopes_it_was_issued_with(account_store: AccountStore) -> None:
    key = await account_store.create_key("root", scopes=[Scope.JOBS, Scope.ADMIN])

    principal = await account_store.authenticate(key)

    assert principal is not None and principal.scopes == {Scope.JOBS, Scope.ADMIN}
    with pytest.raises(ValueError):
        await account_store.create_key("root", scopes=[])


async def test_a_revoked_key_is_refused_and_listed_as_revoked(account_store: AccountStore) -> None:
    key = await account_store.create_key("alice")
    other = await account_store.create_key("alice")
    principal = await account_store.authenticate(key)
    assert principal is not None

    revoked = await account_store.revoke_key(principal.key_id)

    assert revoked is not None and revoked.revoked and revoked.owner == "alice"
    assert await account_store.authenticate(key) is None
    assert await account_store.authenticate(other) is not None
    assert [k.revoked for k in await account_store.list_keys("alice")] == [True, False]
    assert await account_store.revoke_key("0123456789ab") is None


async def test_a_keys_last_use_is_recorded_when_it_authenticates(
    account_store: AccountStore,
) -> None:
    used = await account_store.create_key("alice")
    await account_store.create_key("alice")
    before = datetime.now(UTC)

    await account_store.authenticate(used)
    await account_store.authenticate(used)

    first, second = await account_store.list_keys("alice")
    assert first.last_used_time is not None
    assert first.last_used_time >= before - timedelta(seconds=1)
    assert second.last_used_time is None


async def test_a_users_tariff_reaches_its_keys(account_store: AccountStore) -> None:
    tariff = Tariff(
        "pro",
        prices={"acme/image": Price(5, 7, PriceUnit.IMAGE)},
        max_concurrent_jobs=3,
        submits_per_minute=60,
    )
    await account_store.put_tariff(tariff)
    assert await account_store.create_user("alice", tariff="pro")
    key = await account_store.create_key("alice")

    principal = await account_store.authenticate(key)

    assert principal is not None and principal.tariff == tariff
    assert await account_store.get_tariff("pro") == tariff


async def test_a_tariff_can_be_replaced_and_reassigned(account_store: AccountStore) -> None:
    await account_store.put_tariff(Tariff("pro", prices={"a/b": Price(1)}))
    await account_store.put_tariff(Tariff("pro", prices={"c/d": Price(2)}, submits_per_minute=5))
    key = await account_store.create_key("alice")
    await account_store.assign_tariff("alice", "pro")

    on_pro = await account_store.authenticate(key)
    await account_store.assign_tariff("alice", None)
    on_default = await account_store.authenticate(key)

    assert on_pro is not None and on_pro.tariff.prices == {"c/d": Price(2)}
    assert on_pro.tariff.submits_per_minute == 5
    assert on_default is not None and on_default.tariff == DEFAULT_TARIFF


async def test_unknown_users_and_tariffs_are_not_found(account_store: AccountStore) -> None:
    await account_store.create_user("alice")

    with pytest.raises(NotFound) as no_tariff:
        await account_store.assign_tariff("alice", "nope")
    with pytest.raises(NotFound) as no_user:
        await account_store.assign_tariff("bob", None)
    with pytest.raises(NotFound):
        await account_store.create_user("carol", tariff="nope")
    with pytest.raises(NotFound):
        await account_store.top_up("bob", 1, reference="r")

    assert no_tariff.value.reason is Reason.TARIFF_NOT_FOUND
    assert no_user.value.reason is Reason.USER_NOT_FOUND
    assert not await account_store.create_user("alice")


async def test_a_top_up_counts_once_per_reference(account_store: AccountStore) -> None:
    await account_store.create_user("alice")

    await account_store.top_up("alice", 500, reference="invoice-1")
    again = await account_store.top_up("alice", 500, reference="invoice-1")
    more = await account_store.top_up("alice", 250, reference="invoice-2")

    assert again == Balance("alice", 500, 0)
    assert more == Balance("alice", 750, 0)
    with pytest.raises(ValueError):
        await account_store.top_up("alice", 0, reference="invoice-3")
    await assert_ledger_matches(account_store, "alice")


async def test_a_hold_moves_the_maximum_price_from_available_to_held(
    account_store: AccountStore,
) -> None:
    await funded(account_store, "alice", 2_000_000)
    request = hold_request("alice")

    held_for = await account_store.hold(request)

    assert held_for == request.job_id
    assert await assert_ledger_matches(account_store, "alice") == Balance(
        "alice", 2_000_000 - 1_040_000, 1_040_000
    )
    assert [h.job_id for h in await account_store.open_holds(_later(), 10)] == [request.job_id]


async def test_a_hold_the_balance_does_not_cover_is_refused_and_writes_nothing(
    account_store: AccountStore,
) -> None:
    await funded(account_store, "alice", 1_039_999)

    with pytest.raises(FailedPrecondition) as refused:
        await account_store.hold(hold_request("alice"))

    assert refused.value.reason is Reason.INSUFFICIENT_BALANCE
    assert "1040000" in refused.value.message
    assert await assert_ledger_matches(account_store, "alice") == Balance("alice", 1_039_999, 0)
    assert await account_store.open_holds(_later(), 10) == []


async def test_a_repeated_request_id_holds_once_for_the_first_job(
    account_store: AccountStore,
) -> None:
    await funded(account_store, "alice", 10_000_000)
    first = hold_request("alice", request_id="req-1")
    retry = hold_request("alice", request_id="req-1")

    assert await account_store.hold(first) == first.job_id
    assert await account_store.hold(retry) == first.job_id
    assert (await assert_ledger_matches(account_store, "alice")).held_micros == 1_040_000


async def test_racing_holds_take_exactly_what_the_balance_covers(
    account_store: AccountStore,
) -> None:
    await funded(account_store, "alice", 37 * IMAGE_TERMS.hold_micros)

    results = await asyncio.gather(
        *(account_store.hold(hold_request("alice")) for _ in range(100)), return_exceptions=True
    )

    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(results) - len(refused) == 37
    assert all(isinstance(r, FailedPrecondition) for r in refused)
    balance = await assert_ledger_matches(account_store, "alice")
    assert balance == Balance("alice", 0, 37 * IMAGE_TERMS.hold_micros)


async def test_success_captures_the_cost_of_the_units_used_and_releases_the_rest(
    account_store: AccountStore,
) -> None:
    await funded(account_store, "alice", 2_000_000)
    request = hold_request("alice")
    await account_store.hold(request)

    settled = await account_store.settle(request.job_id, Ending.SUCCEEDED, units=3)

    assert settled == Settlement(request.job_id, "alice", 1_030_000, 10_000)
    assert await assert_ledger_matches(account_store, "alice") == Balance("alice", 970_000, 0)


async def test_success_never_captures_more_than_the_hold(account_store: AccountStore) -> None:
    await funded(account_store, "alice", 2_000_000)
    request = hold_request("alice")
    await account_store.hold(request)

    settled = await account_store.settle(request.job_id, Ending.SUCCEEDED, units=400)

    assert settled is not None and settled.captured_micros == 1_040_000
    assert settled.released_micros == 0


@pytest.mark.parametrize(
    ("ending", "captured"),
    [
        (Ending.FAILED, 0),
        (Ending.CANCELLED_QUEUED, 0),
        (Ending.NOT_RECORDED, 0),
        (Ending.CANCELLED_RUNNING, 1_000_000),
    ],
)
async def test_other_endings_capture_what_the_rules_say(
    account_store: AccountStore, ending: Ending, captured: int
) -> None:
    await funded(account_store, "alice", 2_000_000)
    request = hold_request("alice")
    await account_store.hold(request)

    settled = await account_store.settle(request.job_id, ending, units=2)

    assert settled == Settlement(request.job_id, "alice", captured, 1_040_000 - captured)
    assert await assert_ledger_matches(account_store, "alice") == Balance(
        "alice", 2_000_000 - captured, 0
    )


async def test_a_hold_is_settled_once_however_often_and_concurrently_asked(
    account_store: AccountStore,
) -> None:
    await funded(account_store, "alice", 2_000_000)
    request = hold_request("alice")
    await account_store.hold(request)

    results = await asyncio.gather(
        *(account_store.settle(request.job_id, Ending.SUCCEEDED, units=1) for _ in range(10))
    )
    late = await account_store.settle(request.job_id, Ending.FAILED)

    assert [r for r in results if r is not None] == [
        Settlement(request.job_id, "alice", 1_010_000, 30_000)
    ]
    assert late is None
    assert await assert_ledger_matches(account_store, "alice") == Balance("alice", 990_000, 0)
    assert await account_store.open_holds(_later(), 10) == []


async def test_settling_a_job_never_held_does_nothing(account_store: AccountStore) -> None:
    assert await account_store.settle("no-such-job", Ending.SUCCEEDED, units=1) is None


async def test_a_hold_released_as_never_recorded_frees_its_request_id(
    account_store: AccountStore,
) -> None:
    await funded(account_store, "alice", 10_000_000)
    lost = hold_request("alice", request_id="req-1")
    await account_store.hold(lost)
    await account_store.settle(lost.job_id, Ending.NOT_RECORDED)
    retry = hold_request("alice", request_id="req-1")

    assert await account_store.hold(retry) == retry.job_id
    assert (await assert_ledger_matches(account_store, "alice")).held_micros == 1_040_000


async def test_a_refund_gives_back_the_capture_once(account_store: AccountStore) -> None:
    await funded(account_store, "alice", 2_000_000)
    request = hold_request("alice")
    await account_store.hold(request)
    await account_store.settle(request.job_id, Ending.SUCCEEDED, units=4)

    assert await account_store.refund(request.job_id) == 1_040_000
    assert await account_store.refund(request.job_id) is None
    assert await account_store.refund("never-captured") is None
    assert await assert_ledger_matches(account_store, "alice") == Balance("alice", 2_000_000, 0)


async def test_the_concurrency_limit_counts_unsettled_holds(account_store: AccountStore) -> None:
    await funded(account_store, "alice", 10_000_000)
    tariff = Tariff("two-at-once", max_concurrent_jobs=2)
    first, second = hold_request("alice", tariff=tariff), hold_request("alice", tariff=tariff)
    await account_store.hold(first)
    await account_store.hold(second)

    with pytest.raises(ResourceExhausted) as refused:
        await account_store.hold(hold_request("alice", tariff=tariff))
    await account_store.settle(first.job_id, Ending.FAILED)
    await account_store.hold(hold_request("alice", tariff=tariff))

    assert refused.value.reason is Reason.CONCURRENCY_LIMIT
    assert refused.value.retry_after > 0
    await assert_ledger_matches(account_store, "alice")


async def test_a_free_job_on_a_limited_tariff_still_counts(account_store: AccountStore) -> None:
    await account_store.create_user("alice")
    free = HoldTerms("local/echo", 0, 0, PriceUnit.NONE, 0)
    tariff = Tariff("one-at-once", max_concurrent_jobs=1)

    await account_store.hold(hold_request("alice", terms=free, tariff=tariff))

    with pytest.raises(ResourceExhausted):
        await account_store.hold(hold_request("alice", terms=free, tariff=tariff))


async def test_the_submit_rate_refuses_past_the_limit_with_a_retry_delay(
    account_store: AccountStore,
) -> None:
    await funded(account_store, "alice", 10_000_000)
    tariff = Tariff("three-a-minute", submits_per_minute=3)
    free = HoldTerms("local/echo", 0, 0, PriceUnit.NONE, 0)

    # Counters are per calendar minute: start well inside one, so all four land in it.
    if time.time() % 60 > 50:
        await asyncio.sleep(60.5 - time.time() % 60)
    accepted = 0
    with pytest.raises(ResourceExhausted) as refused:
        for _ in range(4):
            await account_store.hold(hold_request("alice", terms=free, tariff=tariff))
            accepted += 1

    assert accepted == 3
    assert refused.value.reason is Reason.RATE_LIMIT
    assert 0 < refused.value.retry_after <= 60


async def test_usage_sums_settled_jobs_per_day_and_model(account_store: AccountStore) -> None:
    await funded(account_store, "alice", 10_000_000)
    text = HoldTerms("acme/text", 100, 2_000, PriceUnit.THOUSAND_TOKENS, 10_000)
    for terms, ending, units in [
        (IMAGE_TERMS, Ending.SUCCEEDED, 2),
        (IMAGE_TERMS, Ending.SUCCEEDED, 1),
        (IMAGE_TERMS, Ending.FAILED, 0),
        (text, Ending.SUCCEEDED, 1_500),
    ]:
        request = hold_request("alice", terms=terms)
        await account_store.hold(request)
        await account_store.settle(request.job_id, ending, units)

    usage = await account_store.usage("alice", since=date.today() - timedelta(days=1), limit=10)

    today = datetime.now(UTC).date()
    assert [(u.day, u.model, u.jobs, u.units, u.cost_micros) for u in usage] == [
        (today, "acme/image", 2, 3, 2_030_000),
        (today, "acme/text", 1, 1_500, 3_100),
    ]
    assert await account_store.usage("bob", since=today, limit=10) == []


async def test_money_survives_close_and_reopen(account_stores: Reopenable[AccountStore]) -> None:
    store = await account_stores.open()
    await funded(store, "alice", 2_000_000)
    request = hold_request("alice")
    await store.hold(request)
    await store.close()

    reopened = await account_stores.open()

    assert await reopened.balance("alice") == Balance("alice", 960_000, 1_040_000)
    assert await reopened.settle(request.job_id, Ending.SUCCEEDED, units=0) is not None
    await assert_ledger_matches(reopened, "alice")


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=1)
