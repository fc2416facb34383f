"""Billing through the API: holds at CreateJob, settlement by real workers and by cancels, the
reconciler, limits, the caller's balance and usage, and the AdminService.

Every test runs twice: with the embedded SQLite account store and with PostgreSQL for real.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from jobgate.v1 import (
    account_pb2,
    account_service_pb2,
    account_service_pb2_grpc,
    admin_service_pb2,
    admin_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    model_pb2,
)

from core.backends import Backends, open_backends
from core.billing import Balance, Ending, Scope
from core.catalog import InputSpec, ModelSpec, OutputKind, Price, PriceUnit
from core.jobs import JobState, NewJob
from core.ports import AccountStore, JobMessage, JobStore
from core.providers.base import RunContext
from core.providers.local import LocalProvider
from core.providers.registry import ProviderRegistry
from core.settings import Settings
from core.settlement import Reconciler
from tests.contract.test_account_billing import assert_ledger_matches
from tests.server.conftest import Running, StartServer
from tests.server.support import Metadata, Stub, job_request, rich_error
from tests.workers.helpers import wait_for_end, wait_for_state
from workers.runtime import Worker

# Reports as many images as its prompt says; holds for at most 4.
IMAGES = ModelSpec(
    id="test/images",
    display_name="Images",
    description="Makes `prompt` images, billed per image.",
    inputs=(InputSpec("prompt", required=True),),
    outputs=(OutputKind.TEXT,),
    price=Price(per_job_micros=1_000, per_unit_micros=500, unit=PriceUnit.IMAGE),
    max_units=4,
)
IMAGES_HOLD = 1_000 + 500 * 4
ECHO_PRICE = 100  # local/echo's catalog price
SLEEP_PRICE = 1_000  # local/sleep's


class ImagesProvider:
    models = (IMAGES,)

    async def run(self, ctx: RunContext) -> None:
        ctx.report_usage(int(ctx.job.input.prompt))


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    base = Settings(
        data_dir=tmp_path / "data",
        listen="127.0.0.1:0",
        blob_http_listen="127.0.0.1:0",
        keepalive_seconds=30.0,
        shutdown_grace_seconds=1.0,
    )
    if request.param == "postgresql":
        return replace(base, account_store_url=request.getfixturevalue("postgres_url"))
    return base


@pytest.fixture
def registry() -> ProviderRegistry:
    return ProviderRegistry([LocalProvider(), ImagesProvider()])


@pytest.fixture
async def backends(settings: Settings, registry: ProviderRegistry) -> AsyncIterator[Backends]:
    settings.data_dir.mkdir(parents=True)
    opened = await open_backends(settings, registry.catalog, serves_api=True)
    yield opened
    await opened.close()


@dataclass
class Gateway:
    """A server, stubs for its three services, and keys made in its account store."""

    backends: Backends
    channel: grpc.aio.Channel
    jobs: Stub
    account: account_service_pb2_grpc.AccountServiceStub
    admin: admin_service_pb2_grpc.AdminServiceStub
    admin_auth: Metadata

    async def caller(self, owner: str, micros: int = 0, *, tariff: str | None = None) -> Metadata:
        """A `jobs` key of a new user with `micros` to spend."""
        accounts = self.backends.accounts
        await accounts.create_user(owner, tariff)
        if micros:
            await accounts.top_up(owner, micros, reference=f"test:{owner}")
        return bearer(await accounts.create_key(owner))

    async def balance(self, owner: str) -> Balance:
        return await assert_ledger_matches(self.backends.accounts, owner)


def bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture
async def gateway(start_server: StartServer, backends: Backends) -> AsyncIterator[Gateway]:
    running: Running = await start_server()
    admin_key = await backends.accounts.create_key("root", scopes=[Scope.ADMIN])
    async with grpc.aio.insecure_channel(running.address) as channel:
        yield Gateway(
            backends,
            channel,
            Stub(channel),
            account_service_pb2_grpc.AccountServiceStub(channel),
            admin_service_pb2_grpc.AdminServiceStub(channel),
            bearer(admin_key),
        )


StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def start_worker(
    backends: Backends, registry: ProviderRegistry
) -> AsyncIterator[StartWorker]:
    """start_worker(backends=...) runs a Worker (on other ports, if given) until the test ends."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(on: Backends | None = None) -> Worker:
        worker = Worker(on or backends, registry, concurrency=4)
        running.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, task in running:
        await worker.stop(1.0)
        await task


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert details is not None
    for detail in status_pb2.Status.FromString(details).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError("no RetryInfo")


def images_request(images: int, request_id: str = "") -> job_service_pb2.CreateJobRequest:
    return job_service_pb2.CreateJobRequest(
        job=job_pb2.Job(model=IMAGES.id, input=job_pb2.JobInput(prompt=str(images))),
        request_id=request_id,
    )


# --- holds at CreateJob ---


async def test_create_holds_the_maximum_price_and_success_captures_the_units_used(
    gateway: Gateway, start_worker: StartWorker
) -> None:
    alice = await gateway.caller("alice", 10_000)

    job = (await gateway.jobs.CreateJob(images_request(3), metadata=alice)).job
    held = await gateway.balance("alice")
    await start_worker()
    await wait_for_end(gateway.backends, job.name.removeprefix("jobs/"))
    await settled(gateway.backends.accounts)

    assert held == Balance("alice", 10_000 - IMAGES_HOLD, IMAGES_HOLD)
    assert await gateway.balance("alice") == Balance("alice", 10_000 - 2_500, 0)


async def test_usage_beyond_the_models_maximum_is_charged_as_the_maximum(
    gateway: Gateway, start_worker: StartWorker
) -> None:
    alice = await gateway.caller("alice", 10_000)
    await start_worker()

    job = (await gateway.jobs.CreateJob(images_request(9), metadata=alice)).job
    await wait_for_end(gateway.backends, job.name.removeprefix("jobs/"))
    await settled(gateway.backends.accounts)

    assert await gateway.balance("alice") == Balance("alice", 10_000 - IMAGES_HOLD, 0)
    usage = (
        await gateway.account.ListUsage(account_service_pb2.ListUsageRequest(), metadata=alice)
    ).usage
    assert [(u.model, u.job_count, u.units, u.cost_micros) for u in usage] == [
        (IMAGES.id, 1, 4, IMAGES_HOLD)
    ]


async def test_a_balance_that_does_not_cover_the_hold_is_failed_precondition(
    gateway: Gateway,
) -> None:
    alice = await gateway.caller("alice", IMAGES_HOLD - 1)

    error = await failure(gateway.jobs.CreateJob(images_request(1), metadata=alice))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_error(error).info.reason == "INSUFFICIENT_BALANCE"
    assert "balance does not cover" in (error.details() or "")
    assert await gateway.balance("alice") == Balance("alice", IMAGES_HOLD - 1, 0)
    listed = await gateway.jobs.ListJobs(job_service_pb2.ListJobsRequest(), metadata=alice)
    assert list(listed.jobs) == []


async def test_a_hundred_racing_creates_against_37_holds_accept_exactly_37(
    gateway: Gateway,
) -> None:
    alice = await gateway.caller("alice", 37 * ECHO_PRICE)

    results = await asyncio.gather(
        *(gateway.jobs.CreateJob(job_request(prompt=str(i)), metadata=alice) for i in range(100)),
        return_exceptions=True,
    )

    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(results) - len(refused) == 37
    assert {(r.code(), rich_error(r).info.reason) for r in refused} == {
        (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_BALANCE")
    }
    assert await gateway.balance("alice") == Balance("alice", 0, 37 * ECHO_PRICE)
    listed = await gateway.jobs.ListJobs(
        job_service_pb2.ListJobsRequest(page_size=1000), metadata=alice
    )
    assert len(listed.jobs) == 37


async def test_a_repeated_request_id_holds_once(gateway: Gateway) -> None:
    alice = await gateway.caller("alice", 10_000)
    request = images_request(1, request_id=str(uuid.uuid4()))

    first = (await gateway.jobs.CreateJob(request, metadata=alice)).job
    again = await asyncio.gather(
        *(gateway.jobs.CreateJob(request, metadata=alice) for _ in range(5))
    )

    assert {r.job.name for r in again} == {first.name}
    assert await gateway.balance("alice") == Balance("alice", 10_000 - IMAGES_HOLD, IMAGES_HOLD)


async def test_a_job_that_cannot_be_recorded_gives_its_hold_back(gateway: Gateway) -> None:
    alice = await gateway.caller("alice", 10_000)
    gateway.backends.jobs = FailingCreates(gateway.backends.jobs)

    error = await failure(gateway.jobs.CreateJob(images_request(1), metadata=alice))

    assert error.code() == grpc.StatusCode.INTERNAL
    assert await gateway.balance("alice") == Balance("alice", 10_000, 0)


async def test_a_free_job_on_a_tariff_without_limits_costs_no_account_store_call(
    gateway: Gateway,
) -> None:
    alice = await gateway.caller("alice", tariff=await free_echo_tariff(gateway))
    await gateway.jobs.CreateJob(job_request(prompt="warm"), metadata=alice)  # caches the key
    counting = CountingAccounts(gateway.backends.accounts)
    gateway.backends.accounts = counting

    for i in range(20):
        await gateway.jobs.CreateJob(job_request(prompt=str(i)), metadata=alice)

    assert counting.calls == []
    gateway.backends.accounts = counting.store
    assert await gateway.balance("alice") == Balance("alice", 0, 0)


async def test_over_the_concurrency_limit_is_resource_exhausted_with_a_retry_delay(
    gateway: Gateway,
) -> None:
    await set_tariff(gateway, "two", max_concurrent_jobs=2)
    alice = await gateway.caller("alice", 10_000, tariff="two")
    first = (await gateway.jobs.CreateJob(job_request(prompt="1"), metadata=alice)).job
    await gateway.jobs.CreateJob(job_request(prompt="2"), metadata=alice)

    error = await failure(gateway.jobs.CreateJob(job_request(prompt="3"), metadata=alice))
    await gateway.jobs.CancelJob(job_service_pb2.CancelJobRequest(name=first.name), metadata=alice)
    await gateway.jobs.CreateJob(job_request(prompt="4"), metadata=alice)

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rich_error(error).info.reason == "CONCURRENCY_LIMIT"
    assert retry_delay(error) > 0


async def test_over_the_submit_rate_is_resource_exhausted_with_a_retry_delay(
    gateway: Gateway,
) -> None:
    await set_tariff(gateway, "slow", submits_per_minute=2)
    alice = await gateway.caller("alice", 10_000, tariff="slow")

    # Counters are per calendar minute: start well inside one, so all three land in it.
    if time.time() % 60 > 50:
        await asyncio.sleep(60.5 - time.time() % 60)
    for i in range(2):
        await gateway.jobs.CreateJob(job_request(prompt=str(i)), metadata=alice)

    error = await failure(gateway.jobs.CreateJob(job_request(prompt="3"), metadata=alice))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rich_error(error).info.reason == "RATE_LIMIT"
    assert 0 < retry_delay(error) <= 60


# --- settlement ---


async def test_a_failed_job_releases_its_whole_hold(
    gateway: Gateway, start_worker: StartWorker
) -> None:
    alice = await gateway.caller("alice", 10_000)
    await start_worker()
    request = job_service_pb2.CreateJobRequest(
        job=job_pb2.Job(model="local/fail", input=job_pb2.JobInput(prompt="no"))
    )

    job = (await gateway.jobs.CreateJob(request, metadata=alice)).job
    ended = await wait_for_end(gateway.backends, job.name.removeprefix("jobs/"))
    await settled(gateway.backends.accounts)

    assert ended.state is JobState.FAILED
    assert await gateway.balance("alice") == Balance("alice", 10_000, 0)


async def test_a_job_cancelled_before_it_starts_costs_nothing(gateway: Gateway) -> None:
    alice = await gateway.caller("alice", 10_000)
    job = (await gateway.jobs.CreateJob(images_request(2), metadata=alice)).job

    await gateway.jobs.CancelJob(job_service_pb2.CancelJobRequest(name=job.name), metadata=alice)

    assert await gateway.balance("alice") == Balance("alice", 10_000, 0)


async def test_a_job_cancelled_while_running_costs_its_per_job_price(
    gateway: Gateway, start_worker: StartWorker
) -> None:
    alice = await gateway.caller("alice", 10_000)
    await start_worker()
    job = (await gateway.jobs.CreateJob(job_request("local/sleep", seconds=30), metadata=alice)).job
    await wait_for_state(gateway.backends, job.name.removeprefix("jobs/"), JobState.RUNNING)

    await gateway.jobs.CancelJob(job_service_pb2.CancelJobRequest(name=job.name), metadata=alice)

    assert await gateway.balance("alice") == Balance("alice", 10_000 - SLEEP_PRICE, 0)


async def test_duplicate_deliveries_settle_a_job_once(
    gateway: Gateway, start_worker: StartWorker
) -> None:
    alice = await gateway.caller("alice", 10_000)
    job = (await gateway.jobs.CreateJob(images_request(2), metadata=alice)).job
    job_id = job.name.removeprefix("jobs/")
    for _ in range(3):
        await gateway.backends.broker.publish(JobMessage(job_id, IMAGES.id))

    await start_worker()
    await start_worker()
    await wait_for_end(gateway.backends, job_id)
    await settled(gateway.backends.accounts)
    reconciled = await Reconciler(
        gateway.backends.jobs, gateway.backends.accounts, grace=timedelta(0)
    ).run_once()

    assert reconciled.settled == 0
    assert await gateway.balance("alice") == Balance("alice", 10_000 - 2_000, 0)
    totals = await gateway.backends.accounts.ledger_totals("alice")
    assert (totals["HOLD"], totals["CAPTURE"], totals["RELEASE"]) == (3_000, 2_000, 1_000)


async def test_a_worker_killed_between_outcome_and_settlement_is_settled_once_by_the_reconciler(
    gateway: Gateway, start_worker: StartWorker, settings: Settings, registry: ProviderRegistry
) -> None:
    alice = await gateway.caller("alice", 10_000)
    # This worker's process "dies" at the settle: its outcome is recorded, its settlement lost.
    doomed = await open_backends(settings, registry.catalog, serves_api=False)
    doomed.broker, doomed.events = gateway.backends.broker, gateway.backends.events
    doomed.accounts = DyingSettlements(doomed.accounts)
    try:
        await start_worker(doomed)
        job = (await gateway.jobs.CreateJob(images_request(3), metadata=alice)).job
        job_id = job.name.removeprefix("jobs/")
        ended = await wait_for_end(gateway.backends, job_id)
        lost = await gateway.balance("alice")
        # The broker redelivers; the job has ended, so the copy is skipped.
        await gateway.backends.broker.publish(JobMessage(job_id, IMAGES.id))
        await start_worker()
        reconciler = Reconciler(
            gateway.backends.jobs, gateway.backends.accounts, grace=timedelta(0)
        )

        first, second = await reconciler.run_once(), await reconciler.run_once()
    finally:
        await doomed.jobs.close()
        await doomed.accounts.close()
        await doomed.blobs.close()

    assert ended.state is JobState.SUCCEEDED and ended.usage_units == 3
    assert lost == Balance("alice", 10_000 - IMAGES_HOLD, IMAGES_HOLD)
    assert (first.settled, second.settled) == (1, 0)
    assert await gateway.balance("alice") == Balance("alice", 10_000 - 2_500, 0)


async def test_the_reconciler_releases_a_hold_whose_job_was_never_recorded(
    gateway: Gateway,
) -> None:
    alice = await gateway.caller("alice", 10_000)
    gateway.backends.jobs = FailingCreates(gateway.backends.jobs, also_gets=True)
    await failure(gateway.jobs.CreateJob(images_request(1), metadata=alice))
    gateway.backends.jobs = gateway.backends.jobs.store  # type: ignore[attr-defined]
    stuck = await gateway.balance("alice")

    reconciled = await Reconciler(
        gateway.backends.jobs, gateway.backends.accounts, grace=timedelta(0)
    ).run_once()

    assert stuck.held_micros == IMAGES_HOLD
    assert reconciled.released == 1
    assert await gateway.balance("alice") == Balance("alice", 10_000, 0)


async def test_the_reconciler_leaves_unfinished_jobs_held(gateway: Gateway) -> None:
    alice = await gateway.caller("alice", 10_000)
    await gateway.jobs.CreateJob(images_request(1), metadata=alice)

    reconciled = await Reconciler(
        gateway.backends.jobs, gateway.backends.accounts, grace=timedelta(0)
    ).run_once()

    assert (reconciled.unfinished, reconciled.settled, reconciled.released) == (1, 0, 0)
    assert (await gateway.balance("alice")).held_micros == IMAGES_HOLD


# --- the caller's account ---


async def test_get_balance_shows_the_callers_own_money(gateway: Gateway) -> None:
    alice = await gateway.caller("alice", 10_000)
    await gateway.caller("bob", 5)
    await gateway.jobs.CreateJob(images_request(1), metadata=alice)

    balance = (
        await gateway.account.GetBalance(account_service_pb2.GetBalanceRequest(), metadata=alice)
    ).balance

    assert (balance.name, balance.available_micros, balance.held_micros) == (
        "users/alice/balance",
        10_000 - IMAGES_HOLD,
        IMAGES_HOLD,
    )


async def test_list_usage_refuses_a_window_out_of_range(gateway: Gateway) -> None:
    alice = await gateway.caller("alice")

    error = await failure(
        gateway.account.ListUsage(account_service_pb2.ListUsageRequest(days=367), metadata=alice)
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(error).bad_fields == ("days",)


# --- the admin service ---


async def test_an_admin_creates_a_user_funds_it_and_issues_a_key_that_runs_jobs(
    gateway: Gateway, start_worker: StartWorker
) -> None:
    admin, auth = gateway.admin, gateway.admin_auth
    await start_worker()
    await admin.SetTariff(
        admin_service_pb2.SetTariffRequest(
            tariff=account_pb2.Tariff(
                name="tariffs/images",
                prices=[
                    account_pb2.ModelPrice(
                        model=IMAGES.id,
                        price=model_pb2.Price(
                            per_job_micros=10, per_unit_micros=1, unit=model_pb2.Price.UNIT_IMAGE
                        ),
                    )
                ],
            )
        ),
        metadata=auth,
    )
    created = await admin.CreateUser(
        admin_service_pb2.CreateUserRequest(
            user=account_pb2.User(name="users/carol", tariff="tariffs/images")
        ),
        metadata=auth,
    )
    topped = await admin.TopUp(
        admin_service_pb2.TopUpRequest(user="users/carol", amount_micros=100, request_id="inv-1"),
        metadata=auth,
    )
    await admin.TopUp(
        admin_service_pb2.TopUpRequest(user="users/carol", amount_micros=100, request_id="inv-1"),
        metadata=auth,
    )
    issued = await admin.CreateApiKey(
        admin_service_pb2.CreateApiKeyRequest(user="users/carol"), metadata=auth
    )
    carol = bearer(issued.key)
    job = (await gateway.jobs.CreateJob(images_request(2), metadata=carol)).job
    await wait_for_end(gateway.backends, job.name.removeprefix("jobs/"))
    await settled(gateway.backends.accounts)

    balance = await admin.GetUserBalance(
        admin_service_pb2.GetUserBalanceRequest(user="users/carol"), metadata=auth
    )
    usage = await admin.ListUserUsage(
        admin_service_pb2.ListUserUsageRequest(user="users/carol"), metadata=auth
    )
    assert created.user.tariff == "tariffs/images"
    assert topped.balance.available_micros == 100
    assert issued.key.startswith("jg_") and issued.api_key.user == "users/carol"
    assert list(issued.api_key.scopes) == [account_pb2.API_KEY_SCOPE_JOBS]
    assert issued.api_key.name.removeprefix("apiKeys/") in issued.key
    assert balance.balance.available_micros == 100 - 12
    assert [(u.model, u.job_count, u.units, u.cost_micros) for u in usage.usage] == [
        (IMAGES.id, 1, 2, 12)
    ]


async def test_a_revoked_key_is_refused_at_once_by_the_server_that_revoked_it(
    gateway: Gateway,
) -> None:
    key = await gateway.backends.accounts.create_key("alice")
    listed = await gateway.admin.ListApiKeys(
        admin_service_pb2.ListApiKeysRequest(user="users/alice"), metadata=gateway.admin_auth
    )
    await gateway.jobs.ListJobs(job_service_pb2.ListJobsRequest(), metadata=bearer(key))

    revoked = await gateway.admin.RevokeApiKey(
        admin_service_pb2.RevokeApiKeyRequest(name=listed.api_keys[0].name),
        metadata=gateway.admin_auth,
    )
    error = await failure(
        gateway.jobs.ListJobs(job_service_pb2.ListJobsRequest(), metadata=bearer(key))
    )

    assert revoked.api_key.revoked
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_new_tariff_applies_at_once_on_the_server_that_set_it(gateway: Gateway) -> None:
    alice = await gateway.caller("alice", tariff=await free_echo_tariff(gateway))
    await gateway.jobs.CreateJob(job_request(prompt="free"), metadata=alice)

    await gateway.admin.UpdateUserTariff(
        admin_service_pb2.UpdateUserTariffRequest(user="users/alice"), metadata=gateway.admin_auth
    )
    error = await failure(gateway.jobs.CreateJob(job_request(prompt="paid"), metadata=alice))

    assert rich_error(error).info.reason == "INSUFFICIENT_BALANCE"


async def test_admin_errors_name_what_is_missing_or_wrong(gateway: Gateway) -> None:
    admin, auth = gateway.admin, gateway.admin_auth
    await gateway.caller("alice")

    unknown_user = await failure(
        admin.GetUserBalance(admin_service_pb2.GetUserBalanceRequest(user="users/x"), metadata=auth)
    )
    bad_name = await failure(
        admin.TopUp(admin_service_pb2.TopUpRequest(user="alice", amount_micros=1), metadata=auth)
    )
    zero = await failure(
        admin.TopUp(admin_service_pb2.TopUpRequest(user="users/alice"), metadata=auth)
    )
    exists = await failure(
        admin.CreateUser(
            admin_service_pb2.CreateUserRequest(user=account_pb2.User(name="users/alice")),
            metadata=auth,
        )
    )
    no_tariff = await failure(
        admin.UpdateUserTariff(
            admin_service_pb2.UpdateUserTariffRequest(user="users/alice", tariff="tariffs/none"),
            metadata=auth,
        )
    )
    no_key = await failure(
        admin.RevokeApiKey(
            admin_service_pb2.RevokeApiKeyRequest(name="apiKeys/0123456789ab"), metadata=auth
        )
    )
    no_refund = await failure(
        admin.RefundJob(admin_service_pb2.RefundJobRequest(job="jobs/nothing"), metadata=auth)
    )

    assert [
        (e.code(), rich_error(e).info.reason)
        for e in (unknown_user, bad_name, zero, exists, no_tariff, no_key, no_refund)
    ] == [
        (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND"),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (grpc.StatusCode.ALREADY_EXISTS, "USER_ALREADY_EXISTS"),
        (grpc.StatusCode.NOT_FOUND, "TARIFF_NOT_FOUND"),
        (grpc.StatusCode.NOT_FOUND, "API_KEY_NOT_FOUND"),
        (grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_TO_REFUND"),
    ]


async def test_a_refund_gives_a_charged_job_back_once(
    gateway: Gateway, start_worker: StartWorker
) -> None:
    alice = await gateway.caller("alice", 10_000)
    await start_worker()
    job = (await gateway.jobs.CreateJob(images_request(1), metadata=alice)).job
    await wait_for_end(gateway.backends, job.name.removeprefix("jobs/"))
    await settled(gateway.backends.accounts)

    refunded = await gateway.admin.RefundJob(
        admin_service_pb2.RefundJobRequest(job=job.name), metadata=gateway.admin_auth
    )
    again = await failure(
        gateway.admin.RefundJob(
            admin_service_pb2.RefundJobRequest(job=job.name), metadata=gateway.admin_auth
        )
    )

    assert refunded.refunded_micros == 1_500
    assert rich_error(again).info.reason == "NOTHING_TO_REFUND"
    assert await gateway.balance("alice") == Balance("alice", 10_000, 0)


# --- helpers ---


async def set_tariff(gateway: Gateway, name: str, **limits: int) -> None:
    await gateway.admin.SetTariff(
        admin_service_pb2.SetTariffRequest(
            tariff=account_pb2.Tariff(name=f"tariffs/{name}", **limits)
        ),
        metadata=gateway.admin_auth,
    )


async def free_echo_tariff(gateway: Gateway) -> str:
    await gateway.admin.SetTariff(
        admin_service_pb2.SetTariffRequest(
            tariff=account_pb2.Tariff(
                name="tariffs/free-echo",
                prices=[account_pb2.ModelPrice(model="local/echo", price=model_pb2.Price())],
            )
        ),
        metadata=gateway.admin_auth,
    )
    return "free-echo"


async def settled(accounts: AccountStore) -> None:
    """Waits for the worker's settlement, which follows the job's end event by one write."""
    for _ in range(1000):
        if not await accounts.open_holds(datetime.now(UTC) + timedelta(days=1), 1):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a hold is still open after 10 s")


class FailingCreates:
    """A job store whose create fails (and, with `also_gets`, whose reads fail too)."""

    def __init__(self, store: JobStore, *, also_gets: bool = False) -> None:
        self.store = store
        self._also_gets = also_gets

    async def create(self, job: NewJob) -> Any:
        raise ConnectionError("the job store is down")

    async def get(self, job_id: str) -> Any:
        if self._also_gets:
            raise ConnectionError("the job store is down")
        return await self.store.get(job_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class CountingAccounts:
    """The real account store, noting every call made to it."""

    def __init__(self, store: AccountStore) -> None:
        self.store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await method(*args, **kwargs)

        return counted


class DyingSettlements:
    """An account store in a process that dies when it settles: nothing reaches the store."""

    def __init__(self, store: AccountStore) -> None:
        self._store = store

    async def settle(self, job_id: str, ending: Ending, units: int = 0) -> None:
        raise ConnectionResetError("the worker died here")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
