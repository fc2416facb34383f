"""`jobgate health`: asks a server's `grpc.health.v1` service whether it is serving; exits 0 if
it is, 1 if not. The container healthcheck, and a probe for anything that can run a command.

Workers serve nothing to ask, so `jobgate health --broker` checks instead that this network
namespace (the worker's container) holds an established connection to the broker."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launcher.commands import Subparsers

LISTEN_ENV = "JOBGATE_LISTEN"
BROKER_URL_ENV = "JOBGATE_BROKER_URL"
AMQP_PORTS = {"amqp": 5672, "amqps": 5671}
# The kernel's socket tables for this network namespace; state 01 is ESTABLISHED.
TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
ESTABLISHED = "01"
DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_TIMEOUT_SECONDS = 3.0
# A server bound to every interface is reached on loopback from inside its own container.
WILDCARD_HOSTS = {"", "0.0.0.0", "[::]", "::"}
SERVING = health_pb2.HealthCheckResponse.SERVING


def register_health(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "health",
        help="check a server's grpc.health.v1 status: exit 0 if serving, 1 if not",
        description="Asks the server's grpc.health.v1 service whether it is serving. "
        f"Without TARGET, checks the server this environment configures (${LISTEN_ENV}), "
        "on loopback if it listens on every interface.",
    )
    parser.add_argument("target", nargs="?", help="host:port of the server")
    parser.add_argument(
        "--service", default="", help="the service to ask about (default: the whole server)"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        help=f"seconds to wait for the answer (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument(
        "--broker",
        action="store_true",
        help=f"for a worker: check for an established connection to ${BROKER_URL_ENV} instead",
    )
    parser.set_defaults(func=_health)


def local_target(listen: str) -> str:
    """The address to dial for a server listening on `listen`."""
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in WILDCARD_HOSTS else listen


def check(target: str, service: str, timeout: float) -> int:
    """The serving status `target` reports for `service`; raises grpc.RpcError."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return response.status


def broker_connected(broker_url: str, tables: tuple[Path, ...] = TCP_TABLES) -> bool:
    """Whether a TCP connection to the broker URL's port is established in `tables`."""
    url = urlsplit(broker_url)
    port = url.port or AMQP_PORTS.get(url.scheme, AMQP_PORTS["amqp"])
    for table in tables:
        if not table.exists():
            continue
        for row in table.read_text().splitlines()[1:]:
            fields = row.split()
            # fields: sl, local address, remote address (hex ip:port), state, ...
            if fields[3] == ESTABLISHED and int(fields[2].rpartition(":")[2], 16) == port:
                return True
    return False


def _health(args: argparse.Namespace) -> int:
    if args.broker:
        return _broker_health()
    target = args.target or local_target(os.environ.get(LISTEN_ENV) or DEFAULT_LISTEN)
    try:
        status = check(target, args.service, args.timeout)
    except grpc.RpcError as error:
        print(f"jobgate health: {target}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    if status != SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        print(f"jobgate health: {target}: {name}", file=sys.stderr)
        return 1
    return 0


def _broker_health() -> int:
    broker_url = os.environ.get(BROKER_URL_ENV, "")
    if urlsplit(broker_url).scheme not in AMQP_PORTS:
        print(f"jobgate health: ${BROKER_URL_ENV} names no network broker", file=sys.stderr)
        return 1
    if not broker_connected(broker_url):
        print("jobgate health: no established connection to the broker", file=sys.stderr)
        return 1
    return 0


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return seconds
