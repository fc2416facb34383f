"""The benchmark's bare grpcio floor measures what it says, so its numbers can stand beside
jobgate's: every stream gets the one broadcast, every offered call is timed."""

from __future__ import annotations

import math

from bench import grpc_floor


async def test_the_fanout_floor_delivers_one_message_to_every_stream() -> None:
    with grpc_floor.floor_server() as (address, _):
        delays = await grpc_floor.fanout(address, streams=30, channels=3)

    assert len(delays) == 30
    assert all(0 <= delay < 10_000 for delay in delays)


async def test_the_unary_floor_times_every_offered_call_and_the_servers_cpu() -> None:
    with grpc_floor.floor_server() as (address, pid):
        latencies, cpu_ms = await grpc_floor.unary(address, pid, rate=100, seconds=0.3)

    assert len(latencies) == 30
    assert all(0 < latency < 10_000 for latency in latencies)
    assert math.isfinite(cpu_ms) and cpu_ms >= 0
