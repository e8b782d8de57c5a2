"""Migrations applied by `schema-service serve` before it reports ready (unless a Job does it)."""

from __future__ import annotations

import asyncio
import logging

from schema_service.config import MigrationSettings
from schema_service.database import DATABASE_FAILURES
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
        except DATABASE_FAILURES as exc:
            sqlstate = getattr(exc, "sqlstate", None)
            extra = {"error": type(exc).__name__, "sqlstate": sqlstate, "retry_s": delay}
            log.error("migrations failed at start", extra=extra)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff_s)


async def _run(dsn: str, settings: MigrationSettings) -> int:
    version = 0
    async for event in migrate(dsn, RunOptions(settings=settings)):
        if isinstance(event, StatementFinished):
            extra = {"version": event.version, "statement": event.index, "of": event.count, "resumed": event.resumed}
            log.info("migration statement finished", extra=extra)
        elif isinstance(event, MigrationFinished):
            log.info("migration applied", extra={"version": event.version, "duration_s": round(event.duration_s, 3)})
        elif isinstance(event, RunDone):
            version = event.current_version
            log.info("schema up to date", extra={"version": version, "applied": event.applied_count})
    return version
