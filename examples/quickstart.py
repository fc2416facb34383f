"""Submit a job, watch it to the end, print its result: `python examples/quickstart.py`.

Reads JOBGATE_ADDRESS and JOBGATE_API_KEY, as printed by `jobgate dev`.
"""

from __future__ import annotations

import asyncio
import os
import uuid

from jobgate import AsyncJobClient


async def main() -> None:
    address = os.environ.get("JOBGATE_ADDRESS", "localhost:50051")
    async with AsyncJobClient(address, api_key=os.environ["JOBGATE_API_KEY"]) as client:
        # A request_id makes the submit safe to retry: the same id never creates a second job.
        job = await client.submit("local/sleep", duration=1, request_id=str(uuid.uuid4()))
        async for update in client.watch(job.name):  # reconnects and resumes by itself
            if update.HasField("event") and update.event.HasField("progress"):
                print(f"{update.event.progress.fraction:4.0%} {update.event.progress.message}")
        done = await client.result(job.name)  # raises JobFailedError on FAILED or CANCELLED
        print(done.name, done.outputs[0].text)


if __name__ == "__main__":
    asyncio.run(main())
