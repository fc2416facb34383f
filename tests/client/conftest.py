"""Fixtures for the client tests: clients bound to the shared one-process jobgate, and a TCP
proxy in front of it that can cut every connection, to prove that watches survive drops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from jobgate import AsyncJobClient, RetryPolicy

from launcher.embedded import Endpoint

# Quick retries keep the tests fast; enough of them to ride out a proxy pause.
FAST_RETRY = RetryPolicy(max_attempts=10, initial_backoff=0.05, max_backoff=0.3)


class DroppingProxy:
    """Forwards TCP connections to `upstream`. `drop()` cuts every open connection and, for
    `pause` seconds, cuts new ones at once: to a client the service looks gone and then back.
    `forwarded` counts the connections it passed on."""

    def __init__(self, upstream: str) -> None:
        self._host, port = upstream.rsplit(":", 1)
        self._port = int(port)
        self._server: asyncio.Server | None = None
        self._open_ends: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refuse_until = 0.0
        self.address = ""
        self.forwarded = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def drop(self, pause: float = 0.0) -> None:
        self._refuse_until = asyncio.get_running_loop().time() + pause
        for writer in list(self._open_ends):
            writer.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if asyncio.get_running_loop().time() < self._refuse_until:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            writer.transport.abort()
            return
        self.forwarded += 1
        self._open_ends |= {writer, up_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)
            for end in (writer, up_writer):
                self._open_ends.discard(end)
                end.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


@pytest.fixture
async def client(endpoint: Endpoint) -> AsyncIterator[AsyncJobClient]:
    async with AsyncJobClient(endpoint.address, endpoint.api_key, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture
async def proxy(endpoint: Endpoint) -> AsyncIterator[DroppingProxy]:
    proxy = DroppingProxy(endpoint.address)
    await proxy.start()
    yield proxy
    await proxy.close()
