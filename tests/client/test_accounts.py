"""Accounts from the client's side: the caller's balance and usage, the admin clients, and
`jobgate admin` / `jobgate balance` run as real processes, against the embedded jobgate whose
dev key has both scopes."""

from __future__ import annotations

import asyncio

import jobgate
import pytest
from jobgate import AdminClient, AsyncAdminClient, AsyncJobClient, ModelPrice

from launcher.embedded import DEV_OWNER, DEV_WELCOME_MICROS, Endpoint
from tests.client.conftest import FAST_RETRY
from tests.client.test_cli import jobgate as run_jobgate

ECHO_PRICE = 250


async def settled(client: AsyncJobClient) -> jobgate.Balance:
    """The caller's balance once nothing is held: a job's settlement follows its end."""
    for _ in range(500):
        balance = await client.balance()
        if balance.held_micros == 0:
            return balance
        await asyncio.sleep(0.02)
    raise AssertionError("a hold is still open after 10 s")


async def paying_user(admin: AsyncAdminClient, user: str, micros: int) -> str:
    """A new user on a tariff where local/echo costs ECHO_PRICE; returns their new key."""
    await admin.set_tariff("echo-paid", {"local/echo": ModelPrice(per_job_micros=ECHO_PRICE)})
    await admin.create_user(user, tariff="echo-paid")
    await admin.top_up(user, micros, request_id=f"{user}-first")
    return (await admin.create_key(user)).key


async def test_the_dev_user_runs_local_models_free_and_has_a_welcome_balance(
    client: AsyncJobClient,
) -> None:
    job = await client.submit("local/echo", "hi")
    await client.result(job.name)

    balance = await client.balance()

    assert (balance.name, balance.available_micros, balance.held_micros) == (
        f"users/{DEV_OWNER}/balance",
        DEV_WELCOME_MICROS,
        0,
    )
    assert await client.usage() == []


async def test_a_paying_user_is_charged_and_sees_it_in_balance_and_usage(
    endpoint: Endpoint,
) -> None:
    async with AsyncAdminClient(endpoint.address, endpoint.api_key, retry=FAST_RETRY) as admin:
        key = await paying_user(admin, "carol", 1_000)
        async with AsyncJobClient(endpoint.address, key, retry=FAST_RETRY) as carol:
            await carol.result((await carol.submit("local/echo", "one")).name)
            balance = await settled(carol)
            usage = await carol.usage(days=1)
        seen_by_admin = await admin.usage("carol")
        again = await admin.top_up("carol", 1_000, request_id="carol-first")

    assert balance.available_micros == 1_000 - ECHO_PRICE
    assert [(u.model, u.job_count, u.cost_micros) for u in usage] == [("local/echo", 1, ECHO_PRICE)]
    assert list(seen_by_admin) == list(usage)
    assert again.available_micros == 1_000 - ECHO_PRICE


async def test_typed_errors_for_money_and_keys(endpoint: Endpoint) -> None:
    async with AsyncAdminClient(endpoint.address, endpoint.api_key, retry=FAST_RETRY) as admin:
        key = await paying_user(admin, "dave", ECHO_PRICE - 1)
        async with AsyncJobClient(endpoint.address, key, retry=FAST_RETRY) as dave:
            with pytest.raises(jobgate.FailedPreconditionError) as poor:
                await dave.submit("local/echo", "too dear")
            with pytest.raises(jobgate.PermissionDeniedError):
                await AsyncAdminClient(endpoint.address, key).balance("dave")
            (listed,) = await admin.list_keys("dave")
            await admin.revoke_key(listed.name)
            with pytest.raises(jobgate.UnauthenticatedError):
                await dave.balance()

    assert poor.value.reason == "INSUFFICIENT_BALANCE"


async def test_the_concurrency_limit_says_when_to_retry(endpoint: Endpoint) -> None:
    async with AsyncAdminClient(endpoint.address, endpoint.api_key, retry=FAST_RETRY) as admin:
        await admin.set_tariff("one-at-once", max_concurrent_jobs=1)
        await admin.create_user("erin", tariff="one-at-once")
        await admin.top_up("erin", 10_000)
        key = (await admin.create_key("erin")).key
    async with AsyncJobClient(endpoint.address, key, retry=FAST_RETRY) as erin:
        await erin.submit("local/sleep", duration=30)
        with pytest.raises(jobgate.ResourceExhaustedError) as busy:
            await erin.submit("local/sleep", duration=30)

    assert busy.value.reason == "CONCURRENCY_LIMIT"
    assert busy.value.retry_delay is not None and busy.value.retry_delay > 0


async def test_the_blocking_admin_client_does_the_same(endpoint: Endpoint) -> None:
    def manage() -> tuple[int, int]:
        with AdminClient(endpoint.address, endpoint.api_key, retry=FAST_RETRY) as admin:
            admin.create_user("frank")
            topped = admin.top_up("frank", 700)
            tariff = admin.set_tariff(
                "images",
                {"acme/image": ModelPrice(10, 5, "image")},
                submits_per_minute=60,
            )
            assert admin.get_tariff("images") == tariff
            return topped.available_micros, len(tariff.prices)

    assert await asyncio.to_thread(manage) == (700, 1)


async def test_jobgate_admin_manages_a_user_from_the_shell(endpoint: Endpoint) -> None:
    steps = [
        ("admin", "tariff", "set", "cheap", "--price", "local/echo=5", "--max-concurrent", "3"),
        ("admin", "user", "create", "gina", "--tariff", "cheap"),
        ("admin", "top-up", "gina", "100", "--request-id", "r1"),
        ("admin", "top-up", "gina", "100", "--request-id", "r1"),
        ("--json", "admin", "balance", "gina"),
        ("--json", "admin", "key", "create", "gina"),
        ("admin", "tariff", "show", "cheap"),
    ]
    runs = [await run_jobgate(*step, endpoint=endpoint) for step in steps]

    assert [r.code for r in runs] == [0] * len(steps), [r.stderr for r in runs]
    assert runs[4].json_lines() == [{"name": "users/gina/balance", "availableMicros": "100"}]
    key = runs[5].json_lines()[0]["key"]
    balance = await run_jobgate(
        "--json", "balance", endpoint=endpoint, env={"JOBGATE_API_KEY": key}
    )
    assert balance.json_lines() == [{"name": "users/gina/balance", "availableMicros": "100"}]
    assert "local/echo" in runs[6].stdout and "max concurrent 3" in runs[6].stdout


async def test_jobgate_admin_reports_refusals_as_rpc_errors(endpoint: Endpoint) -> None:
    unknown = await run_jobgate("admin", "balance", "nobody", endpoint=endpoint)
    bad_price = await run_jobgate("admin", "tariff", "set", "x", "--price", "a", endpoint=endpoint)

    assert unknown.code == 3 and "USER_NOT_FOUND" in unknown.stderr
    assert bad_price.code == 2


async def test_jobgate_admin_key_list_shows_scopes_and_last_use(endpoint: Endpoint) -> None:
    listed = await run_jobgate("admin", "key", "list", DEV_OWNER, endpoint=endpoint)

    (line,) = listed.stdout.splitlines()
    assert line.startswith("apiKeys/") and f"users/{DEV_OWNER}  jobs,admin  last used " in line
