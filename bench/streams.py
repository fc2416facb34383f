"""Opening thousands of streams at once, at the pace one server here starts them."""

from __future__ import annotations

import asyncio
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
