"""A migration that changes its session (SET ROLE, SET SESSION AUTHORIZATION, SET [LOCAL] search_path)
applies like `psql -1` would apply it, and none of that reaches the runner's own bookkeeping."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from schema_service.config import MigrationSettings
from schema_service.migrate.errors import MigrationFailed
from schema_service.migrate.ops import status
from tests.schema.migration_fixtures.helpers import fetchval, history, run, write_migrations


@pytest.fixture
async def app_owner(empty_db: str) -> AsyncIterator[str]:
    """A role without access to schema_service, dropped (with what it owns) after the test."""
    role = f"owner_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(f"CREATE ROLE {role} NOLOGIN")
        yield role
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def _owner(dsn: str, table: str) -> str:
    return str(await fetchval(dsn, "SELECT relowner::regrole::text FROM pg_class WHERE oid = to_regclass($1)", table))


async def test_transactional_files_changing_role_and_settings_are_recorded(
    empty_db: str, app_owner: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "001_grant.sql": f"GRANT CREATE ON SCHEMA public TO {app_owner};\n",
            "002_as_owner.sql": f"SET ROLE {app_owner};\nCREATE TABLE public.widgets (id int);\n"
            "SET search_path = nowhere;\nSET LOCAL lock_timeout = '1ms';\n",
            "003_session_user.sql": f"SET SESSION AUTHORIZATION {app_owner};\nCREATE TABLE public.gadgets (id int);\n",
        },
    )

    await run(empty_db, folder)

    assert await history(empty_db) == [(1, True), (2, True), (3, True)]
    assert await _owner(empty_db, "public.widgets") == app_owner
    assert await _owner(empty_db, "public.gadgets") == app_owner
    report = await status(empty_db, MigrationSettings(migrations_dir=folder))
    assert report.problems == [] and report.current_version == 3


async def test_a_failure_after_set_role_is_recorded_and_shown_by_status(
    empty_db: str, app_owner: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "001_grant.sql": f"GRANT CREATE ON SCHEMA public TO {app_owner};\n",
            "002_fails.sql": f"SET ROLE {app_owner};\nCREATE TABLE public.widgets (id int);\nSELECT 1 / 0;\n",
        },
    )

    with pytest.raises(MigrationFailed, match="002_fails.sql:3:"):
        await run(empty_db, folder)

    assert await history(empty_db) == [(1, True), (2, False)]
    report = await status(empty_db, MigrationSettings(migrations_dir=folder))
    assert any("version 2 (fails) failed" in problem for problem in report.problems), report.problems


async def test_no_transaction_file_with_set_role_is_journaled_and_resumes_as_that_role(
    empty_db: str, app_owner: str, tmp_path: Path
) -> None:
    header = f"-- migrate: no-transaction\nSET ROLE {app_owner};\nCREATE TABLE IF NOT EXISTS public.widgets (id int);\n"
    folder = write_migrations(
        tmp_path,
        {
            "001_grant.sql": f"GRANT CREATE ON SCHEMA public TO {app_owner};\n",
            "002_no_txn.sql": header + "SELECT 1 / 0;\n",
        },
    )
    with pytest.raises(MigrationFailed, match="002_no_txn.sql:4:"):
        await run(empty_db, folder)
    assert await fetchval(empty_db, "SELECT count(*) FROM schema_service.migration_journal WHERE version = 2") == 2

    # The failed third statement is fixed; the journaled SET ROLE runs again so the rest runs as the role.
    write_migrations(folder, {"002_no_txn.sql": header + "CREATE TABLE IF NOT EXISTS public.later (id int);\n"})
    await run(empty_db, folder)

    assert await history(empty_db) == [(1, True), (2, True)]
    assert await _owner(empty_db, "public.widgets") == app_owner
    assert await _owner(empty_db, "public.later") == app_owner
    report = await status(empty_db, MigrationSettings(migrations_dir=folder))
    assert report.problems == []


async def test_nothing_of_a_files_session_reaches_the_next_file(empty_db: str, tmp_path: Path) -> None:
    session = "CREATE TEMP TABLE scratch (x int);\nPREPARE probe AS SELECT 1;\n"
    leaked = (
        "DO $$ BEGIN IF current_setting('search_path') = 'nowhere' OR current_setting('app.flag', true) = 'on' "
        "THEN RAISE 'a setting leaked'; END IF; END $$;\n"
    )
    folder = write_migrations(
        tmp_path,
        {
            "001_a.sql": session + "SELECT set_config('app.flag', 'on', false);\n",
            "002_b.sql": "-- migrate: no-transaction\nSET search_path = nowhere;\nSET app.flag = 'on';\n",
            # The temporary table and the prepared statement would already exist, a setting would be seen.
            "003_c.sql": session + leaked,
        },
    )

    await run(empty_db, folder)

    assert await history(empty_db) == [(1, True), (2, True), (3, True)]
