"""The `jobgate dev`, `jobgate server` and `jobgate worker` commands, plugged into the client CLI
through the `jobgate.commands` entry points."""

from __future__ import annotations

import argparse
import asyncio
import logging
import runpy
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from core import event_loop
from core.errors import ConfigError
from core.settings import Settings

Subparsers = argparse._SubParsersAction  # argparse exposes no public name for it


def register_dev(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dev",
        help="run server and workers in one process on embedded backends",
        description="Runs jobgate in one process: SQLite stores, an in-process broker and a "
        "local blob folder under the data directory. Creates an API key on first start.",
    )
    parser.add_argument("--listen", help="host:port to serve gRPC on (JOBGATE_LISTEN)")
    parser.add_argument("--data-dir", type=Path, help="where state lives (JOBGATE_DATA_DIR)")
    parser.set_defaults(func=_dev)


def register_server(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "server", help="run the gRPC server alone (workers run as separate processes)"
    )
    parser.set_defaults(func=lambda args: _run_module("server"))


def register_worker(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("worker", help="run a worker process")
    parser.set_defaults(func=lambda args: _run_module("workers"))


def _dev(args: argparse.Namespace) -> int:
    # Imported here: every `jobgate` command loads this plugin, only `dev` needs the service.
    from launcher.embedded import EmbeddedService, banner, dev_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = dev_settings(Settings.from_env(), args.listen, args.data_dir)
    except ConfigError as error:
        print(f"jobgate dev: {error.message}", file=sys.stderr)
        return 2
    service = EmbeddedService(settings)

    async def start() -> None:
        endpoint = await service.start()
        print(banner(endpoint), flush=True)

    return _serve_until_signal(start, service.stop)


def _run_module(name: str) -> int:
    runpy.run_module(name, run_name="__main__")
    return 0


def _serve_until_signal(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> int:
    """Starts, waits for SIGINT or SIGTERM, then stops gracefully. A start-up failure caused by
    settings is one line, not a traceback."""

    async def main() -> int:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        try:
            await start()
        except (ConfigError, OSError) as error:
            print(f"jobgate: cannot start: {error}", file=sys.stderr)
            await stop()
            return 2
        await stopping.wait()
        print("jobgate: stopping…", file=sys.stderr, flush=True)
        await stop()
        return 0

    return event_loop.run(main())
