"""Builds and runs the schema service's grpc.aio server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import asyncpg

from schema_service import database
from schema_service.api import add_to_server
from schema_service.app import App
from schema_service.config import FileFormat, Settings
from schema_service.errors import SchemaServiceError
from schema_service.instruments import SchemaMetrics
from schema_service.metrics.jobs import run_housekeeping
from schema_service.migrate import history
from schema_service.migrate.files import load_dir
from schema_service.migrate.startup import migrate_at_start
from schema_service.usage.jobs import run_ledger_housekeeping
from schemaservice.v1 import metrics_service_pb2, migration_service_pb2, usage_service_pb2
from servicekit.auth import roles_of
from servicekit.metrics import Endpoint, Registry
from servicekit.security import listen
from servicekit.server import Lifecycle, ServerOptions, build_server, serve
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


async def run(settings: Settings) -> None:
    """Serve until SIGTERM; readiness follows the database."""
    settings.security.check()  # before an embedded PostgreSQL is started for nothing
    dsn = await database.resolve_dsn(settings)
    metrics, tracing = Registry(), configure_tracing("schema-service")
    instruments = SchemaMetrics(metrics)
    app = App(settings=settings, dsn=dsn, schema_gate=True, instruments=instruments)
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
    )
    port = listen(server, settings.host, settings.port, settings.security)
    endpoint = Endpoint(metrics, settings.host, settings.metrics_port) if settings.metrics_port else None
    await lifecycle.start(ready=False)
    watcher = asyncio.create_task(_watch_readiness(app, lifecycle))
    # Metrics partitions ahead of time, retention, baselines and anomalies (starts once app.ready is set).
    housekeeping = asyncio.create_task(_gather(run_housekeeping(app), run_ledger_housekeeping(app)))
    log.info("schema service listening", extra={"port": port, "settings": repr(settings)})
    try:
        health_port = settings.security.health_port
        probes = (settings.host, health_port) if health_port is not None else None
        await serve(server, lifecycle, grace_s=settings.shutdown_grace_s, probes=probes)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await housekeeping
        await app.close()
        if endpoint is not None:
            endpoint.close()
        tracing.shutdown()


async def _gather(*jobs: Coroutine[Any, Any, None]) -> None:
    await asyncio.gather(*jobs)


async def _watch_readiness(app: App, lifecycle: Lifecycle) -> None:
    """Connect, run start-up work, then keep readiness in step with the database and its schema.

    Ready means the database answers, accepts writes (not a standby), and its schema has reached the
    newest packaged migration:
    with --no-migrate the pods wait for the migration Job instead of serving on missing tables.
    """
    pool = await app.connect()
    await startup_work(app)
    expected = expected_version(app.settings.migration.migrations_dir, app.settings.migration.file_format)
    availability = database.Availability(app.dsn)
    while True:
        problem = await database.check(pool)
        availability.observe(problem)
        reachable = problem is None
        version = await schema_version(pool) if reachable else -1
        if version >= 0 and app.instruments is not None:
            app.instruments.database.migration_version = version
        if reachable and not app.ready.is_set() and version >= expected:
            log.info("schema ready", extra={"version": expected})
            app.ready.set()
        await lifecycle.set_ready(reachable and app.ready.is_set())
        await asyncio.sleep(app.settings.readiness_interval_s)


def expected_version(migrations_dir: Path, file_format: FileFormat = "native") -> int:
    """The newest version among the migration files (0 when there are none)."""
    try:
        return max((f.version for f in load_dir(migrations_dir, file_format)), default=0)
    except SchemaServiceError as exc:
        # Unreadable files: stay NOT_SERVING (status and lint say why) rather than serve on a guess.
        log.error("cannot read the migrations; staying not ready", extra={"error": exc.message})
        return sys.maxsize


async def schema_version(pool: asyncpg.Pool) -> int:
    """The applied version, or -1 when it cannot be read right now."""
    try:
        async with pool.acquire(timeout=2.0) as conn:
            return await history.applied_version(conn)  # type: ignore[arg-type]
    except database.DATABASE_FAILURES:
        return -1


async def startup_work(app: App) -> None:
    """Work done once the database is reachable, before the service reports ready."""
    if app.settings.migration.migrate_on_start:
        await migrate_at_start(app.dsn, app.settings.migration)
