"""`schema-service serve` applies pending migrations at start, under the lock, before it reports ready."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from servicekit.procs import ServiceProcess
from tests.schema.migration_fixtures.helpers import fetchval, history, write_migrations


@pytest.mark.timeout(60)
async def test_two_replicas_starting_together_apply_each_migration_once(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "001_log.sql": "CREATE TABLE started_log (n int);\n",
            "002_once.sql": "INSERT INTO started_log VALUES (1);\n",
        },
    )
    args = ("--database-url", empty_db, "--migrations-dir", str(folder))
    with ServiceProcess("schema-service", *args) as first, ServiceProcess("schema-service", *args) as second:
        await asyncio.gather(first.wait_serving("readiness"), second.wait_serving("readiness"))
    assert await history(empty_db) == [(1, True), (2, True)]
    assert await fetchval(empty_db, "SELECT count(*) FROM started_log") == 1


@pytest.mark.timeout(60)
async def test_no_migrate_leaves_the_schema_alone(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_a.sql": "CREATE TABLE a (x int);\n"})
    with ServiceProcess(
        "schema-service", "--database-url", empty_db, "--migrations-dir", str(folder), "--no-migrate"
    ) as s:
        await s.wait_serving("readiness")
    assert await fetchval(empty_db, "SELECT to_regclass('a')") is None
