"""The `schema-service` migration commands as an operator runs them: output and exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from schema_service.config import PACKAGE_MIGRATIONS
from schema_service.database import with_database
from tests.schema.migration_fixtures.helpers import FIXTURES, READ_HISTORY, fetchval, restricted_role, write_migrations

pytestmark = pytest.mark.embedded_path

CLI = str(Path(sys.executable).parent / "schema-service")


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_migrate_prints_progress_and_status_json(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "001_a.sql": "CREATE TABLE a (x int);\nCOMMENT ON TABLE a IS 'a';\n",
            "002_idx.sql": "-- migrate: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS a_x ON a (x);\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_x2 ON a (x);\n",
        },
    )
    code, out, err = await cli("migrate", "--migrations-dir", str(folder), "--dry-run", "--database-url", empty_db)
    assert code == 0, err
    assert "at version 0; 2 pending" in out and "no-transaction, 2 statements" in out
    assert "transactional, 2 statements" in out
    assert await fetchval(empty_db, "SELECT to_regnamespace('schema_service')") is None

    env = dict(os.environ, DATABASE_URL=empty_db)
    code, out, err = await cli("migrate", "--migrations-dir", str(folder), env=env)
    assert code == 0, err
    assert "applying 001_a.sql (2 statements, in one transaction)\n  statement 1 of 2 done in " in out
    assert "  statement 2 of 2 done in " in out.split("applied 001_a.sql in ")[0]
    assert "applying 002_idx.sql (2 statements, no transaction)\n  statement 1 of 2 done in " in out
    assert out.strip().endswith("done: at version 2, 2 applied")

    code, out, _ = await cli("status", "--json", "--migrations-dir", str(folder), env=env)
    report = json.loads(out)
    assert code == 0 and report["current_version"] == 2 and report["pending"] == []
    assert [row["version"] for row in report["applied"]] == [1, 2]


async def test_failed_migration_exits_non_zero_naming_file_line_column(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_bad.sql": "CREATE TABLE a (x int);\nSELECT nope FROM a;\n"})
    code, out, err = await cli("migrate", "--migrations-dir", str(folder), "--database-url", empty_db)
    assert code == 1
    assert '001_bad.sql:2:8: 42703: column "nope" does not exist' in err


async def test_verify_json_exits_non_zero_on_drift(migrated_db: str) -> None:
    code, out, _ = await cli("verify", "--json", "--database-url", migrated_db)
    assert code == 0 and json.loads(out) == {"matches": True, "differences": [], "scratch_settings": []}
    await fetchval(migrated_db, "DROP INDEX capability_gaps_agent_id_idx")
    code, out, _ = await cli("verify", "--json", "--database-url", migrated_db)
    report = json.loads(out)
    assert code == 1 and not report["matches"]
    assert [(d["object_kind"], d["object_name"], d["kind"]) for d in report["differences"]] == [
        ("index", "public.capability_gaps_agent_id_idx", "missing")
    ]


async def test_verify_takes_the_scratch_server_from_the_environment(migrated_db: str, pg_admin_dsn: str) -> None:
    async with restricted_role(migrated_db, *READ_HISTORY) as live:
        code, _, err = await cli("verify", "--database-url", live)
        assert code == 1 and "cannot create a scratch database" in err
        env = dict(os.environ, SCHEMA_SERVICE_SCRATCH_URL=with_database(pg_admin_dsn, "postgres"))
        code, out, err = await cli("verify", "--database-url", live, env=env)
    assert (code, out) == (0, "schema matches the migrations\n"), err


async def test_lint_without_squawk_exits_1_saying_so(tmp_path: Path) -> None:
    env = dict(os.environ, SCHEMA_SERVICE_SQUAWK=str(tmp_path / "squawk"))
    code, out, err = await cli("lint", "--migrations-dir", str(PACKAGE_MIGRATIONS), env=env)
    assert (code, out) == (1, "")
    assert err == f"schema-service lint: squawk not found at SCHEMA_SERVICE_SQUAWK={tmp_path / 'squawk'}\n"


async def test_lint_exit_codes() -> None:
    code, out, _ = await cli("lint", "--migrations-dir", str(PACKAGE_MIGRATIONS))
    assert (code, out) == (0, "")
    code, out, _ = await cli("lint", "--migrations-dir", str(FIXTURES / "lint_bad"))
    assert code == 1 and "001_transaction_control.sql:1:1: error: [transaction-control]" in out


async def test_baseline_then_repair(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path, {"001_a.sql": "CREATE TABLE a (x int);\n", "002_b.sql": "CREATE TABLE b (x int);\n"}
    )
    await fetchval(empty_db, "CREATE TABLE a (x int)")
    code, out, err = await cli(
        "baseline", "--version", "1", "--migrations-dir", str(folder), "--database-url", empty_db
    )
    assert code == 0, err
    assert "recorded 001_a.sql as applied" in out
    (folder / "001_a.sql").write_text("CREATE TABLE a (x integer);\n")
    code, _, err = await cli("migrate", "--migrations-dir", str(folder), "--database-url", empty_db)
    assert code == 1 and "001_a.sql was changed after it was applied" in err
    code, out, _ = await cli("repair", "--migrations-dir", str(folder), "--database-url", empty_db)
    assert code == 0 and "001_a.sql: accepted checksum" in out
    code, out, err = await cli("migrate", "--migrations-dir", str(folder), "--database-url", empty_db)
    assert code == 0 and "done: at version 2, 1 applied" in out, err


async def _closed_reader(*args: str) -> tuple[int, str]:
    """Run the CLI with stdout a pipe whose reader is already gone (`... | head` after head exits)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = await asyncio.create_subprocess_exec(CLI, *args, stdout=write_end, stderr=asyncio.subprocess.PIPE)
    finally:
        os.close(write_end)
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_lint_and_status_into_a_closed_pipe_stop_quietly(empty_db: str) -> None:
    code, err = await _closed_reader("lint", "--migrations-dir", str(FIXTURES / "lint_bad"))
    assert (code, err) == (141, "")
    code, err = await _closed_reader("status", "--migrations-dir", str(PACKAGE_MIGRATIONS), "--database-url", empty_db)
    assert (code, err) == (141, "")


async def test_an_unreachable_database_is_one_line_naming_where_and_why(pg_admin_dsn: str) -> None:
    """Refused, or refused by the server: host, port, database and the reason; no traceback, exit 2. On the
    embedded server (a Unix socket, no host in the URL) the place named is the socket folder."""
    from schema_service.database import hosts
    from servicekit.procs import free_port
    from tests.pg import dsn_with_user

    nobody = dsn_with_user(pg_admin_dsn, "nobody:pw-not-printed")
    port = free_port()
    cases = [
        (nobody, f"{hosts(nobody)}, database 'postgres'", 'role "nobody" does not exist'),
        (f"postgresql://u@127.0.0.1:{port}/metrics", f"127.0.0.1:{port}, database 'metrics'", "Connection refused"),
    ]
    for url, where, reason in cases:
        for command in ("status", "migrate"):
            code, out, err = await cli(command, "--database-url", url)
            assert code == 2, err
            assert err.count("\n") == 1 and "Traceback" not in err, err
            assert f"at {where}: {reason}" in err, err
            assert "pw-not-printed" not in err
