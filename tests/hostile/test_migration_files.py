"""Migration files as an attacker would write them: SQL that reaches the database host, files from
outside the folder, look-alike versions, oversized files. Each is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from schema_service.migrate import apply_migrations
from schema_service.migrate.errors import UnsafeStatement
from tests.schema.migration_fixtures.helpers import fetchval, write_migrations

SAFE_FIRST = {"001_table.sql": "CREATE TABLE first_file (id int);\n"}


async def _tables(dsn: str) -> int:
    return int(await fetchval(dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'first_file'"))


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1) TO PROGRAM 'id';",
        "DO $$ BEGIN PERFORM pg_read_file('/etc/passwd'); END $$;",
        "ALTER SYSTEM SET work_mem = '1MB';",
    ],
)
async def test_migrate_refuses_unsafe_sql_before_running_any_file(empty_db: str, tmp_path: Path, sql: str) -> None:
    folder = write_migrations(tmp_path, {**SAFE_FIRST, "002_host.sql": f"-- migrate: no-transaction\n{sql}\n"})

    with pytest.raises(UnsafeStatement) as raised:
        await apply_migrations(empty_db, folder)

    assert raised.value.filename == "002_host.sql" and raised.value.line == 2
    assert "-- migrate: allow-unsafe" in raised.value.message
    assert await _tables(empty_db) == 0  # not even the safe first file ran


async def test_the_named_override_lets_it_run(empty_db: str, tmp_path: Path) -> None:
    # A superuser may run a program on purpose; `true` does nothing on the database host.
    sql = "-- migrate: allow-unsafe copy-program\nCOPY (SELECT 1) TO PROGRAM 'true';\n"
    folder = write_migrations(tmp_path, {**SAFE_FIRST, "002_host.sql": sql})

    assert await apply_migrations(empty_db, folder) == 2
