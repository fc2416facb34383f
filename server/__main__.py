"""`python -m server`: the gRPC server alone, configured by JOBGATE_* variables; workers run
as separate processes. SIGTERM or SIGINT drains it gracefully."""

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
from server.app import JobgateServer

log = logging.getLogger("server")


async def serve(settings: Settings) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    backends = await open_backends(settings, builtin_registry(settings).catalog, serves_api=True)
    try:
        server = JobgateServer(settings, backends)
        port = await server.start()
        host = settings.listen.rsplit(":", 1)[0]
        log.info("jobgate server listening on %s:%d", host, port)
        await stopping.wait()
        log.info("stopping: draining for up to %gs", settings.shutdown_grace_seconds)
        await server.stop(settings.shutdown_grace_seconds)
    finally:
        await backends.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        event_loop.run(serve(Settings.from_env()))
    except (ConfigError, OSError) as error:
        log.error("cannot start: %s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
