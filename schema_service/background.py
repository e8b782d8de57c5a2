"""The schema service's background work, started with the server: readiness following the database, and the
housekeeping of the metrics store and of the usage ledger once the schema is ready."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from schema_service import database
from schema_service.app import App
from schema_service.config import FileFormat
from schema_service.errors import SchemaServiceError
from schema_service.metrics.jobs import Housekeeping, HousekeepingReport
from schema_service.migrate import history
from schema_service.migrate.files import load_dir
from schema_service.migrate.startup import migrate_at_start
from schema_service.usage.jobs import ledger_housekeeping
from schema_service.usage.reconcile import last_hour, reconcile
from servicekit.server import Lifecycle

log = logging.getLogger(__name__)


@dataclass
class Background:
    """The tasks behind one server. `metrics_housekept` and `ledger_housekept` are set after each housekeeping run
    of the metrics store and of the usage ledger; `housekept()` waits for both (tests wait for the first runs)."""

    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    metrics_housekept: asyncio.Event = field(default_factory=asyncio.Event)
    ledger_housekept: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def start(cls, app: App, lifecycle: Lifecycle) -> Background:
        background = cls()
        background.tasks = [
            asyncio.create_task(watch_readiness(app, lifecycle)),
            # Partitions ahead of time, retention, baselines and anomalies, once app.ready is set.
            asyncio.create_task(housekeeping(app, background.metrics_housekept)),
            asyncio.create_task(usage_housekeeping(app, background.ledger_housekept)),
        ]
        return background

    async def housekept(self) -> None:
        await self.metrics_housekept.wait()
        await self.ledger_housekept.wait()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def watch_readiness(app: App, lifecycle: Lifecycle) -> None:
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


async def housekeeping(app: App, housekept: asyncio.Event) -> None:
    """Wait until start-up work is done (schema migrated), then run the metrics housekeeping forever."""
    await app.ready.wait()

    def seen(report: HousekeepingReport) -> None:
        if app.instruments is not None:
            app.instruments.database.partitions = report.partitions
        housekept.set()

    await Housekeeping(app.settings.metrics).run_forever(app.require_pool(), seen)


async def usage_housekeeping(app: App, housekept: asyncio.Event) -> None:
    """Wait for the schema, then keep the usage ledger's partitions every housekeeping interval."""
    await app.ready.wait()
    while True:
        try:
            report = await ledger_housekeeping(app.require_pool(), app.settings.usage, datetime.now(UTC))
            if report.created or report.dropped:
                log.info("usage ledger housekeeping", extra={"report": repr(report)})
        except database.DATABASE_FAILURES as exc:
            log.warning("usage ledger housekeeping failed", extra={"error": f"{type(exc).__name__}: {exc}"})
        else:
            # Apart: a reconciliation that fails (a slow scan of the metrics) is not a failed housekeeping.
            try:
                await reconcile_last_hour(app)
            except database.DATABASE_FAILURES as exc:
                log.warning("usage reconciliation failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            housekept.set()
        await asyncio.sleep(app.settings.metrics.housekeeping_interval_s)


async def reconcile_last_hour(app: App) -> None:
    """The ledger against the gateways' metrics over the last whole hour: drift as a gauge, and logged when any."""
    start, end = last_hour(datetime.now(UTC))
    async with app.require_pool().acquire() as conn, conn.transaction(readonly=True):
        # Bounded as a QueryUsage is: an unbounded scan of the metrics would hold a pool connection as long.
        await conn.execute(f"SET LOCAL statement_timeout = {int(app.settings.usage.query_timeout_s * 1000)}")
        checked = await reconcile(conn, start, end)
    if app.instruments is not None:
        app.instruments.database.usage_drift = (checked.input_drift, checked.output_drift)
    if checked.input_drift or checked.output_drift:
        log.warning(
            "usage ledger and metrics disagree",
            extra={"start": start.isoformat(), "end": end.isoformat(), "reconciliation": repr(checked)},
        )
