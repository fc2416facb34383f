"""Group commit for a store's hot calls: concurrent calls of one kind become one statement.

While one batch is being written, the calls that arrive meanwhile wait together for the next, so
a lone call costs one round trip as before and a busy process pays one round trip (one parse,
one commit, one socket write on each side) per batch instead of per call. A batch holds at most
one call per key (a job id): two changes to one row inside one statement would see the row once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

A = TypeVar("A")  # one call's arguments
R = TypeVar("R")  # one call's result

BATCH_LIMIT = 256


class Batcher(Generic[A, R]):
    """Runs calls through `run_batch`, which takes many calls' arguments and returns their
    results in the same order. When a batch fails, each of its calls runs alone through
    `run_one`, so one bad call (or a deadlock between batches) fails only itself."""

    def __init__(
        self,
        key: Callable[[A], Hashable],
        run_batch: Callable[[Sequence[A]], Awaitable[Sequence[R]]],
        run_one: Callable[[A], Awaitable[R]],
        limit: int = BATCH_LIMIT,
    ) -> None:
        self._key = key
        self._run_batch = run_batch
        self._run_one = run_one
        self._limit = limit
        self._waiting: list[tuple[A, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, args: A) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((args, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all())
        return await future

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                batch = self._take()
                if len(batch) == 1:
                    await self._run_alone(*batch[0])
                else:
                    await self._run(batch)
        finally:
            self._writer = None

    def _take(self) -> list[tuple[A, asyncio.Future[R]]]:
        """The next batch: calls in arrival order, one per key, the rest left waiting."""
        batch: list[tuple[A, asyncio.Future[R]]] = []
        rest: list[tuple[A, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        for call in self._waiting:
            key = self._key(call[0])
            if len(batch) < self._limit and key not in keys:
                keys.add(key)
                batch.append(call)
            else:
                rest.append(call)
        self._waiting = rest
        return batch

    async def _run(self, batch: list[tuple[A, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run_batch([args for args, _ in batch])
        except Exception:
            for args, future in batch:
                await self._run_alone(args, future)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _run_alone(self, args: A, future: asyncio.Future[R]) -> None:
        try:
            result = await self._run_one(args)
        except Exception as error:
            if not future.done():
                future.set_exception(error)
        else:
            if not future.done():
                future.set_result(result)
