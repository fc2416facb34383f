"""One SQLite connection behind asyncio: a dedicated thread owns it and commits in groups.

Callers submit `fn(conn) -> T` and await the result; the event loop never touches the disk.
The thread takes every request waiting at that moment and runs them in ONE transaction, each in
its own SAVEPOINT, then commits once: a commit costs the same for one write as for a hundred, so
throughput grows with load instead of queueing behind per-write commits. A request that raises
rolls back only its own savepoint and gets its exception; the others still commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# Bounds one transaction so a flood of requests still sees commits (and latency) regularly.
MAX_BATCH = 512
BUSY_TIMEOUT_MS = 5000


class RunnerClosed(RuntimeError):
    """The runner was closed; nothing more can be submitted."""


@dataclass(slots=True)
class _Request:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


_STOP = object()


class SqliteRunner:
    """Runs functions on one SQLite connection in a thread of its own, with group commit."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self._loop = loop
        self._requests: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._closed = False

    @classmethod
    async def open(
        cls, path: Path, setup: Callable[[sqlite3.Connection], None] | None = None
    ) -> SqliteRunner:
        """Opens (creating if needed) the database at `path`, then runs `setup` once."""
        runner = cls(path, asyncio.get_running_loop())
        ready: asyncio.Future[None] = runner._loop.create_future()
        thread = threading.Thread(
            target=runner._main, args=(ready,), name=f"sqlite-{path.name}", daemon=True
        )
        thread.start()
        await ready
        if setup is not None:
            try:
                await runner.run(setup)
            except BaseException:
                await runner.close()
                raise
        return runner

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `fn` inside a transaction on the database thread and returns what it returns.

        If the caller is cancelled, `fn` may still run and commit: the thread cannot un-run it.
        """
        if self._closed:
            raise RunnerClosed(f"the database {self.path} is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._requests.put(_Request(fn, future))
        return await future

    async def close(self) -> None:
        """Lets every submitted request finish, then closes the connection and the thread."""
        if not self._closed:
            self._closed = True
            self._requests.put(_STOP)
        await asyncio.shield(self._stopped)

    def _main(self, ready: asyncio.Future[None]) -> None:
        try:
            conn = _connect(self.path)
        except Exception as exc:
            self._settle([(ready, exc, False)])
            self._settle([(self._stopped, None, True)])
            return
        self._settle([(ready, None, True)])
        try:
            self._serve(conn)
        finally:
            conn.close()
            self._settle([(self._stopped, None, True)])

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            batch: list[_Request] = []
            item = self._requests.get()
            while item is not _STOP:
                assert isinstance(item, _Request)
                batch.append(item)
                if len(batch) >= MAX_BATCH:
                    break
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._settle(_run_batch(conn, batch))
            if item is _STOP:
                return

    def _settle(self, results: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
        try:
            self._loop.call_soon_threadsafe(_resolve, results)
        except RuntimeError:
            # The loop is gone: nobody is left to receive these results.
            log.debug("event loop closed before %d sqlite results were delivered", len(results))


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are begun and committed here, explicitly.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _run_batch(
    conn: sqlite3.Connection, batch: list[_Request]
) -> list[tuple[asyncio.Future[Any], Any, bool]]:
    try:
        # IMMEDIATE takes the write lock up front: no lock upgrade can deadlock with another
        # process sharing the file.
        conn.execute("BEGIN IMMEDIATE")
        if len(batch) == 1:
            results = [_run_alone(conn, batch[0])]
        else:
            results = [_run_in_savepoint(conn, request) for request in batch]
        if conn.in_transaction:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        log.error("sqlite transaction on %d requests failed: %s", len(batch), exc)
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return [(request.future, exc, False) for request in batch]
    return results


def _run_alone(
    conn: sqlite3.Connection, request: _Request
) -> tuple[asyncio.Future[Any], Any, bool]:
    # Alone in its transaction, a request needs no savepoint: a rollback undoes only its writes.
    try:
        value = request.fn(conn)
    except Exception as exc:
        conn.execute("ROLLBACK")
        return request.future, exc, False
    return request.future, value, True


def _run_in_savepoint(
    conn: sqlite3.Connection, request: _Request
) -> tuple[asyncio.Future[Any], Any, bool]:
    conn.execute("SAVEPOINT request")
    try:
        value = request.fn(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO request")
        conn.execute("RELEASE request")
        return request.future, exc, False
    conn.execute("RELEASE request")
    return request.future, value, True


def _resolve(results: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
    for future, value, ok in results:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
