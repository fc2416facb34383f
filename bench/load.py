"""How the benchmarks load a server: streams opened at a pace, calls offered at a fixed rate, and
one message timed to many streams."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# About 400 streams/s, what one server starts here while the rest of the stack runs: opened much
# faster, gRPC cancels some before the server gets to them.
OPEN_BATCH = 250
OPEN_PAUSE_SECONDS = 0.6


async def open_paced(
    count: int, stream: Callable[[int], Awaitable[None]]
) -> list[asyncio.Task[None]]:
    """Starts `stream(i)` for i in range(count) as tasks, OPEN_BATCH at a time."""
    tasks = []
    for index in range(count):
        tasks.append(asyncio.create_task(stream(index)))
        if index % OPEN_BATCH == OPEN_BATCH - 1:
            await asyncio.sleep(OPEN_PAUSE_SECONDS)
    return tasks


async def offer(rate: float, seconds: float, call: Callable[[], Awaitable[float]]) -> list[float]:
    """Starts `call` rate x seconds times on schedule, open loop (a slow call does not hold back
    the next), and returns what each returned: its latency."""
    calls = []
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        calls.append(asyncio.create_task(call()))
    return list(await asyncio.gather(*calls))


class Fanout:
    """One message timed to each of `streams` streams: which are ready for it, and each delay."""

    def __init__(self, streams: int) -> None:
        self.streams = streams
        self.delays: list[float] = []  # milliseconds
        self.all_ready = asyncio.Event()
        self._ready = 0
        self._all_measured = asyncio.Event()

    def ready(self) -> None:
        self._ready += 1
        if self._ready == self.streams:
            self.all_ready.set()

    async def received(self, sent: float) -> None:
        """Times one stream's copy of the message sent at `sent` (time.time()), then waits for
        the rest: streams hanging up at once would load both ends while later ones are timed."""
        self.delays.append((time.time() - sent) * 1000)
        if len(self.delays) == self.streams:
            self._all_measured.set()
        await self._all_measured.wait()
