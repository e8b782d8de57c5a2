"""A migration run: take the lock, plan, refuse what is unsafe, apply pending files in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schema_service.config import MigrationSettings
from schema_service.database import DATABASE_FAILURES
from schema_service.errors import MigrationError
from schema_service.migrate import history
from schema_service.migrate.apply import TimeoutPolicy, run_no_transaction, run_transactional
from schema_service.migrate.connections import WorkConnection, connect, terminate_orphans
from schema_service.migrate.errors import LockWaitTimeout
from schema_service.migrate.events import (
    Event,
    LockWaiting,
    MigrationFinished,
    MigrationStarted,
    PlannedItem,
    PlanReady,
    RunDone,
    StatementFinished,
)
from schema_service.migrate.files import MigrationFile, load_dir
from schema_service.migrate.lock import MigrationLock
from schema_service.migrate.plan import Plan, build_plan, refuse_unsafe
from schema_service.migrate.statements import Statement, check_transactional, check_unsafe, parse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """One run: settings plus the per-call choices (target, dry run, out of order)."""

    settings: MigrationSettings = field(default_factory=MigrationSettings)
    target: int | None = None
    dry_run: bool = False

    @classmethod
    def build(cls, migrations_dir: Path | None = None, **options: Any) -> RunOptions:
        """`migrations_dir` and any MigrationSettings field or RunOptions field, by keyword."""
        names = set(MigrationSettings.model_fields)
        setting_values = {k: v for k, v in options.items() if k in names}
        if migrations_dir is not None:
            setting_values["migrations_dir"] = Path(migrations_dir)
        rest = {k: v for k, v in options.items() if k not in names}
        return cls(settings=MigrationSettings(**setting_values), **rest)

    @property
    def timeouts(self) -> TimeoutPolicy:
        s = self.settings
        return TimeoutPolicy(
            statement_timeout_ms=int(s.statement_timeout_s * 1000),
            lock_timeout_ms=int(s.lock_timeout_s * 1000),
            lock_retries=s.lock_retries,
            lock_retry_backoff_s=s.lock_retry_backoff_s,
        )


def parse_checked(file: MigrationFile) -> list[Statement]:
    """Statements of a file, checked for SQL that reaches outside the database without its override;
    transactional files also for what cannot run in them."""
    statements = parse(file)
    check_unsafe(file, statements)
    if file.transactional:
        check_transactional(file, statements)
    return statements


def statement_count(file: MigrationFile, statements: list[Statement]) -> int:
    """Top-level statements of a file; each reports its completion (StatementFinished)."""
    return len(statements)


def plan_items(plan: Plan, statements: dict[int, list[Statement]]) -> list[PlannedItem]:
    return [
        PlannedItem(f.version, f.name, f.checksum, f.transactional, statement_count(f, statements[f.version]))
        for f in plan.pending
    ]


async def migrate(dsn: str, options: RunOptions) -> AsyncIterator[Event]:
    """Apply pending migrations, yielding progress; raises MigrationError subclasses on failure."""
    files = load_dir(options.settings.migrations_dir, options.settings.file_format)
    if options.dry_run:
        async for event in _dry_run(dsn, files, options):
            yield event
        return
    lock = await MigrationLock.open(dsn)
    try:
        async for event in wait_for_lock(lock, options.settings):
            yield event
        async for event in _locked_run(dsn, lock, files, options):
            yield event
    finally:
        await lock.close()


async def _locked_run(
    dsn: str, lock: MigrationLock, files: list[MigrationFile], options: RunOptions
) -> AsyncIterator[Event]:
    await history.ensure_tables(lock.conn)
    orphans = await terminate_orphans(lock.conn)
    if orphans:
        log.warning("terminated backends left by a dead migration runner", extra={"pids": orphans})
    rows = await history.read(lock.conn)
    plan = build_plan(files, rows, target=options.target, allow_out_of_order=options.settings.allow_out_of_order)
    refuse_unsafe(plan)
    statements = {f.version: parse_checked(f) for f in plan.pending}
    yield PlanReady(plan.current_version, plan_items(plan, statements))
    work = WorkConnection(dsn)
    try:
        for file in plan.pending:
            work.durable = file is plan.pending[-1]
            async for event in _apply(work, lock, file, statements[file.version], options.timeouts):
                yield event
    finally:
        await work.close()
    final = await history.applied_version(lock.conn)
    yield RunDone(final, len(plan.pending))


async def _apply(
    work: WorkConnection, lock: MigrationLock, file: MigrationFile, statements: list[Statement], timeouts: TimeoutPolicy
) -> AsyncIterator[Event]:
    yield MigrationStarted(
        file.version, file.name, statement_count(file, statements), file.filename, file.transactional
    )
    started = time.monotonic()
    try:
        if file.transactional:
            run = run_transactional(work, file, statements, timeouts)
        else:
            run = run_no_transaction(work, lock.conn, file, statements, timeouts)
        async for done in run:
            yield StatementFinished(file.version, done.index, done.count, done.duration_s, done.resumed)
    except MigrationError as exc:
        await work.close()
        # Recording the failure must never hide it (the lock connection may be gone with the server).
        with contextlib.suppress(*DATABASE_FAILURES):
            await history.record(
                lock.conn,
                version=file.version,
                name=file.name,
                checksum=file.checksum,
                transactional=file.transactional,
                execution_ms=int((time.monotonic() - started) * 1000),
                success=False,
                error=exc.message,
            )
        raise
    except BaseException:
        await work.close()  # mid-file: its session cannot be trusted
        raise
    yield MigrationFinished(file.version, file.name, time.monotonic() - started, file.checksum, file.filename)


async def wait_for_lock(lock: MigrationLock, settings: MigrationSettings) -> AsyncIterator[Event]:
    """Poll pg_try_advisory_lock until it is ours or `lock_wait_s` passes; report the holder."""
    deadline = time.monotonic() + settings.lock_wait_s
    reported: object = ()
    while not await lock.try_acquire():
        holder = await lock.holder()
        if holder != reported:
            reported = holder
            yield LockWaiting(holder)
        if time.monotonic() >= deadline:
            who = f" (held by {holder.application_name}, pid {holder.backend_pid})" if holder else ""
            raise LockWaitTimeout(f"migration lock not acquired within {settings.lock_wait_s:g} s{who}")
        await asyncio.sleep(settings.lock_poll_s)


async def _dry_run(dsn: str, files: list[MigrationFile], options: RunOptions) -> AsyncIterator[Event]:
    """Read the history (if any) and plan; creates and changes nothing."""
    conn = await connect(dsn, "schema-service-plan")
    try:
        rows = await history.read(conn)
    finally:
        await conn.close()
    plan = build_plan(files, rows, target=options.target, allow_out_of_order=options.settings.allow_out_of_order)
    statements = {f.version: parse_checked(f) for f in plan.pending}
    yield PlanReady(plan.current_version, plan_items(plan, statements))
    refuse_unsafe(plan)
    yield RunDone(plan.current_version, 0)


async def apply_migrations(dsn: str, migrations_dir: Path | None = None, **options: Any) -> int:
    """Apply every pending file in version order; returns the applied version."""
    version = 0
    async for event in migrate(dsn, RunOptions.build(migrations_dir, **options)):
        if isinstance(event, RunDone):
            version = event.current_version
    return version
