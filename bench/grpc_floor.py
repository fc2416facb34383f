"""The floor under jobgate's gRPC targets: a bare grpcio server, with no jobgate code, measured
the same way and in the same run as jobgate.

- fan-out: one message to N idle server streams, from the server handing it over to each
  client receiving it (WatchJob's shape, with nothing behind it);
- unary: calls/s offered open loop, their p50/p99 and the server's CPU per call (CreateJob's
  shape, with no store, broker or auth behind it).

Whatever jobgate does, its numbers cannot beat these on the same machine: they are what grpcio
and Python cost here. `python -m bench.grpc_floor` serves and prints its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc

from bench.cpu import cpu_seconds
from bench.load import Fanout, offer, open_paced
from core import event_loop

REPO = Path(__file__).resolve().parent.parent
SERVICE = "floor.Floor"
REPLY = b"x" * 200  # about the size of a CreateJobResponse


def _same(data: bytes) -> bytes:
    return data


class _Hub:
    """The streams waiting for the next broadcast."""

    def __init__(self) -> None:
        self.next: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def watch(self, request: bytes, context: object) -> AsyncIterator[bytes]:
        yield b"ready"
        yield await self.next
        await asyncio.Event().wait()  # idle until the client hangs up, as a watcher does

    async def broadcast(self, request: bytes, context: object) -> bytes:
        self.next.set_result(f"{time.time():.6f}".encode())
        self.next = asyncio.get_running_loop().create_future()
        return b""

    async def echo(self, request: bytes, context: object) -> bytes:
        return REPLY


async def serve() -> None:
    hub = _Hub()
    codecs = {"request_deserializer": _same, "response_serializer": _same}
    handlers = {
        "Watch": grpc.unary_stream_rpc_method_handler(hub.watch, **codecs),
        "Broadcast": grpc.unary_unary_rpc_method_handler(hub.broadcast, **codecs),
        "Echo": grpc.unary_unary_rpc_method_handler(hub.echo, **codecs),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


@contextlib.contextmanager
def floor_server() -> Iterator[tuple[str, int]]:
    """A bare grpcio server in its own process, as jobgate's server is: (address, pid)."""
    command = [sys.executable, "-m", "bench.grpc_floor"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO) as process:
        assert process.stdout is not None
        try:
            yield f"127.0.0.1:{int(process.stdout.readline())}", process.pid
        finally:
            process.terminate()


def _unary(channel: grpc.aio.Channel, name: str) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(f"/{SERVICE}/{name}", _same, _same)


def _streaming(channel: grpc.aio.Channel, name: str) -> grpc.aio.UnaryStreamMultiCallable:
    return channel.unary_stream(f"/{SERVICE}/{name}", _same, _same)


async def fanout(address: str, streams: int, channels: int) -> list[float]:
    """Milliseconds from the server handing one message to each of `streams` idle streams to
    each client receiving it."""
    pool = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    fanout = Fanout(streams)

    async def watch(index: int) -> None:
        call = _streaming(pool[index % channels], "Watch")(b"")
        await call.read()
        fanout.ready()
        await fanout.received(float(await call.read()))
        call.cancel()

    tasks = await open_paced(streams, watch)
    await asyncio.wait_for(fanout.all_ready.wait(), timeout=120)
    await _unary(pool[0], "Broadcast")(b"")
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    for channel in pool:
        await channel.close()
    return fanout.delays


async def unary(address: str, pid: int, rate: float, seconds: float) -> tuple[list[float], float]:
    """Latencies (ms) of unary calls offered at `rate`/s, and the server's CPU ms per call."""
    async with grpc.aio.insecure_channel(address) as channel:
        echo = _unary(channel, "Echo")
        await echo(b"")

        async def one() -> float:
            begin = time.perf_counter()
            await echo(b"y" * 100)
            return (time.perf_counter() - begin) * 1000

        before = cpu_seconds(pid)
        latencies = await offer(rate, seconds, one)
        return latencies, 1000 * (cpu_seconds(pid) - before) / len(latencies)


if __name__ == "__main__":
    event_loop.run(serve())
