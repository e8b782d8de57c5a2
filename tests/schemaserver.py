"""The schema service as every test starts it: `schema_service.server.start`, the code `serve` runs.

So a test server has what production has: the schema gate, readiness following the database (and migrating at
start unless `migrate_on_start=False`), housekeeping, Prometheus, the callers' roles. Only where it listens
(127.0.0.1, a free port) and what the test asks for differ.

By default the helper returns once the service is ready (the schema migrated, readiness SERVING) and the
first housekeeping run is over, so no test races the start-up work; `ready=False` returns at once (a database
that is not reachable or not migrated, where readiness is what the test is about).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schema_service import server
from schema_service.config import MetricsSettings, MigrationSettings, Settings
from servicekit.security import Security
from servicekit.tracing import Tracing

HealthStatus = health_pb2.HealthCheckResponse.ServingStatus


def settings_for(
    dsn: str,
    *,
    migration: MigrationSettings | None = None,
    metrics: MetricsSettings | None = None,
    security: Security | None = None,
    **fields: Any,
) -> Settings:
    """`serve`'s settings for a test: the database `dsn`, 127.0.0.1 and a free port, the rest as given."""
    return Settings(
        database_url=dsn,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        migration=migration or MigrationSettings(),
        metrics=metrics or MetricsSettings(),
        security=security or Security(insecure_dev=True),
        **fields,
    )


async def _started(settings: Settings, ready: bool, tracing: Tracing | None = None) -> server.Running:
    running = await server.start(settings, tracing)
    if ready:
        await running.app.ready.wait()
        await running.background.housekept()
    return running


@asynccontextmanager
async def schema_server(
    settings: Settings, *, ready: bool = True, tracing: Tracing | None = None
) -> AsyncIterator[server.Running]:
    """The schema service started as `serve` starts it; stopped and closed on the way out."""
    async with await _started(settings, ready, tracing) as running:
        yield running


class RestartableSchemaServer:
    """schema_server's service, stopped and started again on the port it got first, as a restarted pod behind
    its Service (the gateway's telemetry, usage and rotation tests)."""

    def __init__(self, dsn: str, security: Security | None = None) -> None:
        self.settings = settings_for(dsn, security=security)
        self._running: server.Running | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.port}"

    async def start(self) -> None:
        self._running = running = await _started(self.settings, ready=True)
        self.settings = self.settings.model_copy(update={"port": running.port})

    async def stop(self) -> None:
        if self._running is not None:
            await self._running.stop()
        self._running = None


async def wait_for_readiness(channel: grpc.aio.Channel, status: HealthStatus) -> None:
    """Until the `readiness` health name reports `status`, as a probe watching it would see."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="readiness"))
    try:
        async for answer in watch:
            if answer.status == status:
                return
    finally:
        watch.cancel()
