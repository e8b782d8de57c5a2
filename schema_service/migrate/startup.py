"""Migrations applied by `schema-service serve` before it reports ready (unless a Job does it)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from schema_service.config import MigrationSettings
from schema_service.errors import SchemaServiceError
from schema_service.migrate.events import MigrationFinished, RunDone, StatementFinished
from schema_service.migrate.runner import RunOptions, migrate

log = logging.getLogger(__name__)


async def migrate_at_start(dsn: str, settings: MigrationSettings, *, max_backoff_s: float = 60.0) -> int:
    """Apply pending migrations under the lock; on failure log why and retry with backoff.

    The service stays NOT_SERVING meanwhile, which is what a rollout should see: a replica whose
    schema cannot be brought up to date must not take traffic.
    """
    delay = 1.0
    while True:
        try:
            return await _run(dsn, settings)
        except SchemaServiceError as exc:
            extra = {"error": exc.message, "reason": exc.reason, "retry_s": delay}
            log.error("migrations failed at start", extra=extra)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.error("migrations failed at start", extra={"error": type(exc).__name__, "retry_s": delay})
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff_s)


async def _run(dsn: str, settings: MigrationSettings) -> int:
    version = 0
    async for event in migrate(dsn, RunOptions(settings=settings)):
        if isinstance(event, (MigrationFinished, StatementFinished)):
            log.info("migration progress", extra={"event": type(event).__name__, "version": event.version})
        elif isinstance(event, RunDone):
            version = event.current_version
            log.info("schema up to date", extra={"version": version, "applied": event.applied_count})
    return version
