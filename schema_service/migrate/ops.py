"""Status, repair and baseline: the operations around a run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from schema_service.config import MigrationSettings
from schema_service.errors import SchemaServiceError
from schema_service.migrate import history
from schema_service.migrate.connections import connect
from schema_service.migrate.errors import BaselineRefused
from schema_service.migrate.events import PlannedItem
from schema_service.migrate.files import MigrationFile, load_dir
from schema_service.migrate.lock import LockHolder, MigrationLock, current_holder
from schema_service.migrate.plan import build_plan
from schema_service.migrate.runner import parse_checked, plan_items, wait_for_lock
from schema_service.migrate.statements import Statement


@dataclass(frozen=True)
class Status:
    current_version: int
    applied: list[history.HistoryRow]
    pending: list[PlannedItem]
    lock_holder: LockHolder | None
    problems: list[str] = field(default_factory=list)


async def status(dsn: str, settings: MigrationSettings) -> Status:
    """Applied history, pending files, the lock holder and problems; reads only."""
    files = load_dir(settings.migrations_dir, settings.file_format)
    conn = await connect(dsn, "schema-service-status")
    try:
        rows = await history.read(conn)
        holder = await current_holder(conn)
    finally:
        await conn.close()
    plan = build_plan(files, rows, allow_out_of_order=settings.allow_out_of_order)
    statements: dict[int, list[Statement]] = {}
    problems = list(plan.problems)
    for file in plan.pending:
        try:
            statements[file.version] = parse_checked(file)
        except SchemaServiceError as exc:  # a bad pending file is a problem to show, not a failed status
            statements[file.version] = []
            problems.append(exc.message)
    return Status(plan.current_version, rows, plan_items(plan, statements), holder, problems)


@asynccontextmanager
async def locked(dsn: str, settings: MigrationSettings) -> AsyncIterator[asyncpg.Connection]:
    """The lock connection, with the migration lock held and the history tables present."""
    lock = await MigrationLock.open(dsn)
    try:
        async for _ in wait_for_lock(lock, settings):
            pass
        await history.ensure_tables(lock.conn)
        yield lock.conn
    finally:
        await lock.close()


async def repair(dsn: str, settings: MigrationSettings) -> list[str]:
    """Accept current checksums of changed applied files, forget failed attempts and stale journals."""
    files = {f.version: f for f in load_dir(settings.migrations_dir, settings.file_format)}
    actions: list[str] = []
    async with locked(dsn, settings) as conn, conn.transaction():
        for row in await history.read(conn):
            file = files.get(row.version)
            if not row.success:
                await conn.execute(f"DELETE FROM {history.SCHEMA}.migration_history WHERE version = $1", row.version)
                actions.append(f"forgot failed attempt of version {row.version} ({row.name})")
            elif file is not None and file.checksum != row.checksum:
                await conn.execute(
                    f"UPDATE {history.SCHEMA}.migration_history SET checksum = $2 WHERE version = $1",
                    row.version,
                    file.checksum,
                )
                actions.append(f"{file.filename}: accepted checksum {file.checksum} (was {row.checksum})")
        actions.extend(await _repair_journals(conn, files))
    return actions


async def _repair_journals(conn: asyncpg.Connection, files: dict[int, MigrationFile]) -> list[str]:
    """Drop the journal of a half-run file whose statements changed: all of it then runs again."""
    actions = []
    for version in await conn.fetch(f"SELECT DISTINCT version FROM {history.SCHEMA}.migration_journal"):
        number = version["version"]
        file = files.get(number)
        done = await history.journal(conn, number)
        statements = parse_checked(file) if file is not None else []
        stale = any(i > len(statements) or statements[i - 1].checksum != c for i, c in done.items())
        if stale:
            await history.clear_journal(conn, number)
            actions.append(f"forgot the statement journal of version {number}; all its statements run again")
    return actions


async def baseline(dsn: str, settings: MigrationSettings, version: int) -> list[MigrationFile]:
    """Adopt a database created by other means: record files up to `version` as applied, run nothing."""
    files = [f for f in load_dir(settings.migrations_dir, settings.file_format) if f.version <= version]
    async with locked(dsn, settings) as conn, conn.transaction():
        # Failed attempts (e.g. a migrate run before adoption) are replaced; applied ones are not.
        applied = [row.version for row in await history.read(conn) if row.success]
        if applied:
            raise BaselineRefused(
                f"the database already has applied migrations (up to {max(applied)}); baseline only adopts a "
                "database without history"
            )
        await record_as_applied(conn, files, applied_by=f"baseline {history.runner_identity()}")
    return files


async def record_as_applied(conn: asyncpg.Connection, files: list[MigrationFile], *, applied_by: str) -> None:
    """Adopt: the history becomes exactly these files, applied by other means (failed attempts are dropped)."""
    await conn.execute(f"DELETE FROM {history.SCHEMA}.migration_history")
    for file in files:
        await history.record(
            conn,
            version=file.version,
            name=file.name,
            checksum=file.checksum,
            transactional=file.transactional,
            execution_ms=0,
            success=True,
            applied_by=applied_by,
        )
