"""Builds and runs the schema service's grpc.aio server: servicers, health, reflection, telemetry, readiness,
housekeeping, draining. The same shape as the gateway's (servicekit.startup): `prepare`, `start`, `run`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from schema_service import database
from schema_service.api.servicers import add_to_server
from schema_service.app import App
from schema_service.background import Background
from schema_service.config import LIMITS, Settings
from schema_service.instruments import SchemaMetrics
from schemaservice.v1 import metrics_service_pb2, migration_service_pb2, usage_service_pb2
from servicekit.auth import roles_of
from servicekit.metrics import Endpoint, Registry
from servicekit.security import listen
from servicekit.server import Lifecycle, ServerOptions, build_server
from servicekit.startup import StartedServer, metrics_endpoint, until_stopped
from servicekit.tracing import Tracing
from servicekit.tracing import configure as configure_tracing

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    migration_service_pb2.DESCRIPTOR.services_by_name["MigrationService"].full_name,
    metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name,
    usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
)
# The role each method needs (docs/security.md).
ROLES = {
    **roles_of(
        metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"],
        "metrics.read",
        WriteMetrics="metrics.write",
        StreamMetrics="metrics.write",
    ),
    **roles_of(usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"], "usage.read", RecordUsage="usage.write"),
    **roles_of(
        migration_service_pb2.DESCRIPTOR.services_by_name["MigrationService"],
        "migrations.read",
        Migrate="migrations.admin",
    ),
}
# Long-lived calls, limited per kind as well as with all calls (servicekit.concurrency; docs "Limits").
KINDS = {
    "/schemaservice.v1.MetricsService/StreamMetrics": "metric_streams",
    "/schemaservice.v1.MigrationService/WaitForVersion": "watches",
}


@dataclass
class Running(StartedServer):
    """A prepared server: its port, the service state and the lifecycle; `async with` stops and closes it."""

    server: grpc.aio.Server
    port: int
    app: App
    lifecycle: Lifecycle
    background: Background
    metrics: Registry
    tracing: Tracing
    endpoint: Endpoint | None = None

    async def close(self) -> None:
        await self.background.stop()
        await self.app.close()
        if self.endpoint is not None:
            self.endpoint.close()
        self.tracing.shutdown()


async def prepare(settings: Settings, tracing: Tracing | None = None) -> Running:
    """Build the service and its server bound to `settings.host:port` (port 0 picks a free one), not started.

    Readiness starts NOT_SERVING and follows the database once it is reached (schema_service.background); calls
    that need the schema are refused with UNAVAILABLE + RetryInfo until it is migrated (App.require_pool).
    With --embedded (and no URL) the embedded PostgreSQL is started first. Tracing is configured from the OTEL_*
    environment unless given (tests pass an in-memory exporter).
    """
    dsn = await database.resolve_dsn(settings)
    metrics, tracing = Registry(), tracing or configure_tracing("schema-service")
    instruments = SchemaMetrics(metrics)
    app = App(settings=settings, dsn=dsn, instruments=instruments)
    instruments.watch_pool(lambda: app.pool)
    lifecycle = Lifecycle(SERVICE_NAMES)
    options = ServerOptions(
        max_message_bytes=settings.max_message_bytes, max_concurrent_rpcs=settings.max_concurrent_rpcs
    )
    server = build_server(
        options,
        lifecycle,
        [lambda s: add_to_server(s, app, lifecycle)],
        SERVICE_NAMES,
        metrics=metrics,
        tracing=tracing,
        security=settings.security,
        roles=ROLES,
        limits=LIMITS,
        kinds=KINDS,
    )
    port = listen(server, settings.host, settings.port, settings.security)
    endpoint = metrics_endpoint(metrics, settings)
    await lifecycle.start(ready=False)
    background = Background.start(app, lifecycle)
    log.info("schema service listening", extra={"port": port, "settings": repr(settings)})
    return Running(server, port, app, lifecycle, background, metrics, tracing, endpoint)


async def start(settings: Settings, tracing: Tracing | None = None) -> Running:
    """Build and start serving (tests; `run` leaves the start to servicekit's `serve`)."""
    running = await prepare(settings, tracing)
    await running.server.start()
    return running


async def run(settings: Settings) -> None:
    """Serve until SIGTERM, then drain in-flight calls within the grace and exit."""
    settings.security.check()  # before an embedded PostgreSQL is started for nothing
    running = await prepare(settings)
    await until_stopped(running, settings)
