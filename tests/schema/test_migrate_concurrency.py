"""Several runners at once, the lock holder, and runners killed with SIGKILL mid-migration.

"Mid" is made deterministic with a table lock the test holds: the migration blocks on it, the test
sees the backend waiting in pg_stat_activity, and only then kills the runner.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import asyncpg
import pytest

from schema_service.config import MigrationSettings
from schema_service.migrate import apply_migrations
from schema_service.migrate.errors import LockWaitTimeout
from schema_service.migrate.events import LockWaiting, StatementFinished
from schema_service.migrate.ops import status
from tests.schema.migration_fixtures.helpers import (
    fetchval,
    history,
    wait_for_lock_wait,
    wait_until_gone,
    write_migrations,
)

NO_TX = "-- migrate: no-transaction\n"
CLI = str(Path(sys.executable).parent / "schema-service")


@pytest.mark.timeout(60)
async def test_eight_concurrent_migrators_apply_each_file_exactly_once(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "001_log.sql": "CREATE TABLE applied_log (file text NOT NULL);\n",
            "002_once.sql": "INSERT INTO applied_log VALUES ('002');\nSELECT pg_sleep(0.05);\n",
            "003_idx.sql": NO_TX
            + "CREATE INDEX CONCURRENTLY IF NOT EXISTS applied_log_file_idx ON applied_log (file);\n",
            "004_once.sql": "INSERT INTO applied_log VALUES ('004');\n",
        },
    )
    versions = await asyncio.gather(*(apply_migrations(empty_db, folder, lock_poll_s=0.01) for _ in range(8)))

    assert versions == [4] * 8
    assert await fetchval(empty_db, "SELECT count(*) FROM applied_log") == 2
    assert await history(empty_db) == [(1, True), (2, True), (3, True), (4, True)]


@pytest.mark.timeout(60)
async def test_waiting_runner_sees_the_holder_and_gives_up_after_lock_wait(empty_db: str, tmp_path: Path) -> None:
    await fetchval(empty_db, "CREATE TABLE blocker (x int)")
    folder = write_migrations(tmp_path, {"001_read.sql": "CREATE TABLE made (x int);\nSELECT count(*) FROM blocker;\n"})
    blocker = await asyncpg.connect(empty_db)
    try:
        await blocker.execute("BEGIN; LOCK TABLE blocker IN ACCESS EXCLUSIVE MODE")
        first = asyncio.create_task(apply_migrations(empty_db, folder, lock_timeout_s=30))
        await wait_for_lock_wait(empty_db)

        report = await status(empty_db, MigrationSettings(migrations_dir=folder))
        assert report.lock_holder is not None
        assert report.lock_holder.application_name.startswith("schema-service-migrate-lock ")
        events: list[object] = []
        with pytest.raises(LockWaitTimeout, match="held by schema-service-migrate-lock"):
            async for _event in _events(empty_db, folder, events, lock_wait_s=0.2, lock_poll_s=0.02):
                pass
        waiting = [e for e in events if isinstance(e, LockWaiting)]
        assert waiting and waiting[0].holder is not None
        assert waiting[0].holder.backend_pid == report.lock_holder.backend_pid

        second = asyncio.create_task(apply_migrations(empty_db, folder, lock_poll_s=0.02))
        await blocker.execute("ROLLBACK")
        assert await first == 1
        assert await second == 1
    finally:
        await blocker.close()
    assert await history(empty_db) == [(1, True)]


async def _events(dsn: str, folder: Path, sink: list[object], **options: object):  # type: ignore[no-untyped-def]
    from schema_service.migrate import RunOptions, migrate

    async for event in migrate(dsn, RunOptions.build(folder, **options)):
        sink.append(event)
        yield event


async def _kill_runner_while_blocked(dsn: str, folder: Path) -> int:
    """Start `schema-service migrate` as a process, wait until it blocks on the test's lock, SIGKILL it.

    Returns the pid of the backend the dead runner left waiting on the server."""
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "migrate",
        "--database-url",
        dsn,
        "--migrations-dir",
        str(folder),
        "--lock-timeout",
        "60",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        orphan = await wait_for_lock_wait(dsn)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return orphan


@pytest.mark.timeout(60)
async def test_sigkill_mid_transactional_file_then_rerun(empty_db: str, tmp_path: Path) -> None:
    await fetchval(empty_db, "CREATE TABLE blocker (x int)")
    folder = write_migrations(
        tmp_path,
        {
            "001_first.sql": "CREATE TABLE first (x int);\n",
            "002_blocked.sql": "CREATE TABLE second (x int);\nINSERT INTO blocker VALUES (2);\n",
        },
    )
    blocker = await asyncpg.connect(empty_db)
    try:
        await blocker.execute("BEGIN; LOCK TABLE blocker IN ACCESS EXCLUSIVE MODE")
        orphan = await _kill_runner_while_blocked(empty_db, folder)
        assert await history(empty_db) == [(1, True)]

        rerun = asyncio.create_task(apply_migrations(empty_db, folder, lock_timeout_s=30))
        # The dead runner's backend still waits (and holds `second`'s catalog rows): the rerun must end it.
        await wait_until_gone(empty_db, orphan)
        await blocker.execute("ROLLBACK")
        assert await rerun == 2
    finally:
        await blocker.close()
    assert await history(empty_db) == [(1, True), (2, True)]
    assert await fetchval(empty_db, "SELECT count(*) FROM blocker") == 1


@pytest.mark.timeout(60)
async def test_sigkill_mid_no_transaction_file_then_resume(empty_db: str, tmp_path: Path) -> None:
    await fetchval(empty_db, "CREATE TABLE blocker (x int)")
    folder = write_migrations(
        tmp_path,
        {
            "001_steps.sql": NO_TX
            + "CREATE TABLE IF NOT EXISTS side (x int);\n"
            + "CREATE INDEX CONCURRENTLY IF NOT EXISTS blocker_x_idx ON blocker (x);\n"
            + "CREATE INDEX CONCURRENTLY IF NOT EXISTS side_x_idx ON side (x);\n",
        },
    )
    blocker = await asyncpg.connect(empty_db)
    try:
        await blocker.execute("BEGIN; LOCK TABLE blocker IN SHARE MODE")
        orphan = await _kill_runner_while_blocked(empty_db, folder)
        assert await fetchval(empty_db, "SELECT count(*) FROM schema_service.migration_journal") == 1

        events: list[object] = []
        rerun = asyncio.create_task(_collect(empty_db, folder, events))
        await wait_until_gone(empty_db, orphan)
        await blocker.execute("ROLLBACK")
        await rerun
    finally:
        await blocker.close()
    finished = [(e.index, e.resumed) for e in events if isinstance(e, StatementFinished)]
    assert finished == [(1, True), (2, False), (3, False)]
    valid = (
        "SELECT bool_and(indisvalid) FROM pg_index "
        "WHERE indexrelid IN (to_regclass('blocker_x_idx'), to_regclass('side_x_idx'))"
    )
    assert await fetchval(empty_db, valid) is True
    assert await history(empty_db) == [(1, True)]


async def _collect(dsn: str, folder: Path, sink: list[object]) -> None:
    async for _event in _events(dsn, folder, sink, lock_timeout_s=30):
        pass
