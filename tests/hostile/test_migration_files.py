"""Migration files as an attacker would write them: SQL that reaches the database host, files from
outside the folder, look-alike versions, oversized files. Each is refused before anything runs."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from schema_service.migrate import apply_migrations
from schema_service.migrate.errors import MigrationFileError, UnsafeStatement
from schema_service.migrate.files import load_dir
from schema_service.migrate.lint import lint_dir
from schema_service.migrate.reading import MAX_FILE_BYTES, MAX_FOLDER_BYTES
from schemaservice.v1 import migration_service_pb2 as pb
from tests.schema.migration_fixtures.helpers import fetchval, write_migrations
from tests.schema.test_migrate_service import _details, migration_server

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
    # A superuser may run a program on purpose; this one reads the row and discards it.
    sql = "-- migrate: allow-unsafe copy-program\nCOPY (SELECT 1) TO PROGRAM 'cat > /dev/null';\n"
    folder = write_migrations(tmp_path, {**SAFE_FIRST, "002_host.sql": sql})

    assert await apply_migrations(empty_db, folder) == 2


async def test_a_link_out_of_the_folder_is_refused(empty_db: str, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.sql"
    outside.write_text("CREATE TABLE from_outside (id int);\n")
    folder = write_migrations(tmp_path / "migrations", SAFE_FIRST)
    (folder / "002_outside.sql").symlink_to(outside)

    with pytest.raises(MigrationFileError, match="002_outside.sql: a link to a file outside the migrations folder"):
        await apply_migrations(empty_db, folder)
    assert await _tables(empty_db) == 0


def test_a_link_within_the_folder_is_read(tmp_path: Path) -> None:
    """A Kubernetes ConfigMap volume: each file is a link into a hidden folder inside the volume."""
    folder = write_migrations(tmp_path / "migrations", {})
    (folder / "..data").mkdir()
    (folder / "..data" / "001_table.sql").write_text(SAFE_FIRST["001_table.sql"])
    (folder / "001_table.sql").symlink_to(folder / "..data" / "001_table.sql")

    assert [f.sql for f in load_dir(folder)] == [SAFE_FIRST["001_table.sql"]]


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, SAFE_FIRST)
    os.mkfifo(folder / "002_fifo.sql")

    with pytest.raises(MigrationFileError, match="002_fifo.sql: not a regular file"):
        load_dir(folder)


@pytest.mark.parametrize("name", ["００２_wide.sql", "٠٠٢_arabic.sql", "V２__wide.sql"])
def test_versions_are_ascii_digits(tmp_path: Path, name: str) -> None:
    folder = write_migrations(tmp_path, {**SAFE_FIRST, name: "CREATE TABLE wide (id int);\n"})
    file_format = "flyway" if name.startswith("V") else "native"
    if file_format == "flyway":
        (folder / "001_table.sql").rename(folder / "V1__table.sql")

    with pytest.raises(MigrationFileError, match="versions are ASCII digits 0-9"):
        load_dir(folder, file_format)


async def test_an_upper_case_sql_name_is_an_error_not_ignored(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {**SAFE_FIRST, "002_loud.SQL": "CREATE TABLE loud (id int);\n"})

    with pytest.raises(MigrationFileError, match="002_loud.SQL: migration files end in .sql"):
        load_dir(folder)
    findings = [f for f in await lint_dir(folder) if f.rule == "invalid-file"]
    assert [(f.file, f.severity) for f in findings] == [("002_loud.SQL", "error")]


def test_a_version_over_bigint_is_refused_naming_the_file(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"9223372036854775808_big.sql": "SELECT 1;\n"})

    with pytest.raises(MigrationFileError, match="version 9223372036854775808 is over the largest version"):
        load_dir(folder)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, SAFE_FIRST)
    with (folder / "002_huge.sql").open("wb") as huge:
        huge.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used, and a read of it would take 16 MiB

    with pytest.raises(MigrationFileError, match=r"002_huge.sql: 16777217 bytes, over the limit of 16 MiB"):
        load_dir(folder)


def test_a_folder_over_its_size_limit_is_refused(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, SAFE_FIRST)
    count = MAX_FOLDER_BYTES // MAX_FILE_BYTES + 1
    for version in range(2, 2 + count):
        with (folder / f"{version:03d}_big.sql").open("wb") as big:
            big.truncate(MAX_FILE_BYTES)

    with pytest.raises(MigrationFileError, match="over the limit of 128 MiB for a folder"):
        load_dir(folder)


async def test_get_status_refuses_a_version_over_int64_cleanly(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"99999999999999999999_big.sql": "SELECT 1;\n"})

    async with migration_server(empty_db, folder) as running:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.GetStatus(pb.GetStatusRequest(), timeout=10)

    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = _details(raised.value)
    assert (info.reason, info.metadata["file"]) == ("MIGRATION_FILE_INVALID", "99999999999999999999_big.sql")
    assert "over the largest version, 9223372036854775807" in (raised.value.details() or "")
