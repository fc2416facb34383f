"""JobgateServer: the gRPC server with the JobService, AccountService and AdminService, health
and reflection, the outbox and the billing reconciler, and its drain."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from jobgate.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    admin_service_pb2,
    admin_service_pb2_grpc,
    job_service_pb2,
    job_service_pb2_grpc,
)

from core.backends import Backends
from core.settings import Settings
from core.settlement import Reconciler
from server.account_service import AccountService
from server.admin_service import AdminService
from server.auth import ApiKeyInterceptor
from server.convert import JobRenderer
from server.job_service import JobService
from server.outbox import Outbox
from server.uploads import UploadPolicy, Uploads
from server.watch import JobWatcher

log = logging.getLogger(__name__)

SERVICE_NAME = job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
ACCOUNT_SERVICE_NAME = account_service_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name
ADMIN_SERVICE_NAME = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
HEALTH_SERVICES = ("", SERVICE_NAME)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        # Two servers must never share a port unnoticed.
        ("grpc.so_reuseport", 0),
        # Ping idle connections so dead peers (and their watch streams) are noticed.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Let clients keep long watches alive with pings, but not flood.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class JobgateServer:
    """Serves jobgate's API on `settings.listen` until stopped."""

    def __init__(self, settings: Settings, backends: Backends) -> None:
        self._settings = settings
        self._backends = backends
        self._draining = asyncio.Event()
        self._health = health.aio.HealthServicer()
        renderer = JobRenderer(backends.blobs, timedelta(seconds=settings.download_url_ttl_seconds))
        self.watcher = JobWatcher(
            backends.jobs, backends.events, renderer, settings.keepalive_seconds, self._draining
        )
        uploads = Uploads(backends.blobs, UploadPolicy.from_settings(settings))
        self.outbox = Outbox(backends.jobs, backends.broker)
        self._service = JobService(
            backends, renderer, self.watcher, self._draining, uploads, self.outbox
        )
        self._auth = ApiKeyInterceptor(backends.accounts)
        # In the server, not the workers: servers are fewer, always run, and settle cancels
        # already; every replica runs one, which settlement's idempotency makes harmless.
        self.reconciler = Reconciler(backends.jobs, backends.accounts)
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Binds `settings.listen` and serves; returns the port (useful with port 0)."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        for service in HEALTH_SERVICES:
            await self._health.set(service, NOT_SERVING)
        server = grpc.aio.server(
            interceptors=[self._auth],
            options=server_options(self._settings),
        )
        accounts = self._backends.accounts
        job_service_pb2_grpc.add_JobServiceServicer_to_server(self._service, server)
        account_service_pb2_grpc.add_AccountServiceServicer_to_server(
            AccountService(accounts), server
        )
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminService(accounts, self._auth), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                ACCOUNT_SERVICE_NAME,
                ADMIN_SERVICE_NAME,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        try:
            port = server.add_insecure_port(self._settings.listen)
        except RuntimeError as error:
            raise OSError(f"cannot listen on {self._settings.listen}: {error}") from None
        await server.start()
        self._server = server
        self.outbox.start()
        self.reconciler.start()
        for service in HEALTH_SERVICES:
            await self._health.set(service, SERVING)
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Drains: health says NOT_SERVING, CreateJob refuses (SHUTTING_DOWN), watch streams end
        so clients resume elsewhere, calls in flight get `grace` seconds, and every job already
        recorded is also queued before this returns."""
        if self._server is None:
            return
        grace = self._settings.shutdown_grace_seconds if grace is None else grace
        await self._health.enter_graceful_shutdown()
        self._draining.set()
        self.watcher.drain()
        await self._server.stop(grace)
        await self._service.wait_for_submissions(grace=max(grace, 1.0))
        await self.outbox.stop()
        await self.reconciler.stop()
        log.info("jobgate server stopped")

    async def wait_for_termination(self) -> None:
        if self._server is None:
            raise RuntimeError("the server is not started")
        await self._server.wait_for_termination()
