"""`python -m workers` (and `jobgate worker`): one worker process, configured by JOBGATE_*
variables, draining gracefully on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from core import event_loop
from core.backends import open_backends
from core.errors import ConfigError
from core.providers.registry import builtin_registry
from core.settings import Settings
from workers.runtime import Worker

log = logging.getLogger("workers")


async def serve(settings: Settings) -> None:
    registry = builtin_registry(settings)
    backends = await open_backends(settings, registry.catalog, serves_api=False)
    try:
        try:
            worker = Worker.from_settings(backends, registry, settings)
        except ValueError as error:
            raise ConfigError(f"JOBGATE_WORKER_MODELS: {error}") from None
        running = asyncio.create_task(worker.run(), name="worker")
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        log.info("worker running: concurrency %d", settings.worker_concurrency)
        signalled = asyncio.create_task(stopping.wait())
        await asyncio.wait({running, signalled}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        log.info("worker stopping: up to %g s for running jobs", settings.shutdown_grace_seconds)
        await worker.stop(settings.shutdown_grace_seconds)
        await running
    finally:
        await backends.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        event_loop.run(serve(Settings.from_env()))
    except ConfigError as error:
        log.error("cannot start: %s", error.message)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
