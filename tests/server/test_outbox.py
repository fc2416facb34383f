"""The outbox: every recorded job reaches the broker, even when its server died between
recording and publishing it, or the broker was down."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from core.adapters.memory_broker import MemoryBroker
from core.backends import Backends
from core.jobs import JobInput, NewJob
from tests.server.conftest import Running
from tests.server.support import Metadata, Stub, create, job_id, job_request, rich_error


def recorded_long_ago(owner: str) -> NewJob:
    """A job as a server records it before publishing, created well before the sweep's cut-off."""
    return NewJob(
        id=uuid.uuid4().hex,
        owner=owner,
        model="local/echo",
        input=JobInput(prompt="orphan"),
        create_time=datetime.now(UTC) - timedelta(minutes=5),
    )


def queued(backends: Backends, model: str = "local/echo") -> int:
    assert isinstance(backends.broker, MemoryBroker)
    return backends.broker.queued(model)


async def test_a_job_queued_by_create_job_is_marked_published(
    running: Running, stub: Stub, alice: Metadata, backends: Backends
) -> None:
    name = await create(stub, alice)
    await running.server.outbox.flush()

    future = datetime.now(UTC) + timedelta(hours=1)
    assert job_id(name) not in [j.id for j in await backends.jobs.unpublished(future, 100)]


async def test_the_sweep_publishes_a_job_its_server_recorded_but_never_queued(
    running: Running, backends: Backends
) -> None:
    await backends.jobs.create(recorded_long_ago("alice"))
    before = queued(backends)

    assert await running.server.outbox.sweep() == 1
    await running.server.outbox.flush()

    assert queued(backends) == before + 1
    assert await running.server.outbox.sweep() == 0


async def test_a_job_the_broker_refused_is_queued_by_the_sweep_once_it_is_back(
    running: Running,
    stub: Stub,
    alice: Metadata,
    backends: Backends,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = backends.broker
    assert isinstance(broker, MemoryBroker)

    async def refuse(*args: object, **kwargs: object) -> None:
        raise ConnectionError("broker down")

    with monkeypatch.context() as patch:
        patch.setattr(broker, "publish", refuse)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await create(stub, alice, job_request(prompt="down", request_id="while-down"))
    error = rich_error(refused.value)
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.info.reason == "QUEUE_UNAVAILABLE"

    (job,) = await backends.jobs.unpublished(datetime.now(UTC) + timedelta(hours=1), 10)
    assert job.request_id == "while-down"
    monkeypatch.setattr("server.outbox.SWEEP_AGE", timedelta(0))
    before = queued(backends)
    assert await running.server.outbox.sweep() == 1
    assert queued(backends) == before + 1
