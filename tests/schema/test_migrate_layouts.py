"""Other migrators' folders (`--format dbmate|golang-migrate|flyway`), the native layout refusing them by
name, and `import-history` taking over their history so that nothing runs twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from schema_service.config import FileFormat, MigrationSettings
from schema_service.migrate import apply_migrations
from schema_service.migrate.errors import HistoryImportRefused, MigrationFailed, MigrationFileError
from schema_service.migrate.imported import import_history
from tests.schema.migration_fixtures.helpers import fetch, fetchval, history, write_migrations
from tests.schema.test_migrate_cli import cli

DBMATE = {
    "20240101120000_widgets.sql": "-- migrate:up\nCREATE TABLE widgets (id int);\n\n"
    "-- migrate:down\nDROP TABLE widgets;\n",
    "20240102120000_widgets_idx.sql": "-- migrate:up transaction:false\n"
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS widgets_id ON widgets (id);\n"
    "-- migrate:down\nDROP INDEX widgets_id;\n",
}
GOLANG = {
    "000001_widgets.up.sql": "CREATE TABLE widgets (id int);\n",
    "000001_widgets.down.sql": "DROP TABLE widgets;\n",
    "000002_gadgets.up.sql": "CREATE TABLE gadgets (id int);\n",
    "000002_gadgets.down.sql": "DROP TABLE gadgets;\n",
}
FLYWAY = {"V1__widgets.sql": "CREATE TABLE widgets (id int);\n", "V2__gadgets.sql": "CREATE TABLE gadgets (id int);\n"}


async def _tables(dsn: str) -> set[str]:
    rows = await fetch(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row["tablename"] for row in rows}


async def test_dbmate_runs_only_the_up_sections_with_their_transaction_option(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, DBMATE)

    await apply_migrations(empty_db, folder, file_format="dbmate")

    assert await _tables(empty_db) == {"widgets"}
    assert await fetchval(empty_db, "SELECT to_regclass('widgets_id') IS NOT NULL")
    rows = await fetch(empty_db, "SELECT version, transactional FROM schema_service.migration_history ORDER BY 1")
    assert [tuple(r) for r in rows] == [(20240101120000, True), (20240102120000, False)]


async def test_dbmate_errors_point_at_the_line_of_the_file(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"20240101120000_bad.sql": "-- migrate:up\n\nSELECT 1 / 0;\n-- migrate:down\n"})
    with pytest.raises(MigrationFailed, match=r"20240101120000_bad.sql:3:1: 22012"):
        await apply_migrations(empty_db, folder, file_format="dbmate")


async def test_golang_migrate_runs_the_up_files(empty_db: str, tmp_path: Path) -> None:
    await apply_migrations(empty_db, write_migrations(tmp_path, GOLANG), file_format="golang-migrate")

    assert await _tables(empty_db) == {"widgets", "gadgets"}
    assert await history(empty_db) == [(1, True), (2, True)]


async def test_flyway_runs_versioned_files_and_refuses_repeatable_ones(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, FLYWAY)
    await apply_migrations(empty_db, folder, file_format="flyway")
    assert await _tables(empty_db) == {"widgets", "gadgets"}

    write_migrations(folder, {"R__views.sql": "CREATE OR REPLACE VIEW v AS SELECT 1;\n"})
    with pytest.raises(MigrationFileError, match=r"R__views.sql: only versioned Flyway migrations"):
        await apply_migrations(empty_db, folder, file_format="flyway")


@pytest.mark.parametrize(("files", "flag"), [(DBMATE, "dbmate"), (GOLANG, "golang-migrate"), (FLYWAY, "flyway")])
async def test_the_native_layout_names_the_format_and_the_flag(
    empty_db: str, tmp_path: Path, files: dict[str, str], flag: str
) -> None:
    with pytest.raises(MigrationFileError, match=f"pass --format {flag}"):
        await apply_migrations(empty_db, write_migrations(tmp_path, files))
    assert await fetchval(empty_db, "SELECT to_regnamespace('schema_service')") is None


IMPORTS: list[tuple[FileFormat, dict[str, str], str, str]] = [
    (
        "dbmate",
        DBMATE,
        "CREATE TABLE widgets (id int); CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY);"
        "INSERT INTO schema_migrations VALUES ('20240101120000')",
        "dbmate's schema_migrations",
    ),
    (
        "golang-migrate",
        GOLANG,
        "CREATE TABLE widgets (id int); CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean);"
        "INSERT INTO schema_migrations VALUES (1, false)",
        "golang-migrate's schema_migrations",
    ),
    (
        "flyway",
        FLYWAY,
        "CREATE TABLE widgets (id int); CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, "
        "version varchar(50), description varchar(200), success boolean NOT NULL);"
        "INSERT INTO flyway_schema_history VALUES (1, '1', 'widgets', true)",
        "Flyway's flyway_schema_history",
    ),
]


@pytest.mark.parametrize(("file_format", "files", "existing", "source"), IMPORTS, ids=[i[0] for i in IMPORTS])
async def test_import_history_takes_over_and_nothing_runs_twice(
    empty_db: str, tmp_path: Path, file_format: FileFormat, files: dict[str, str], existing: str, source: str
) -> None:
    folder = write_migrations(tmp_path, files)
    await fetchval(empty_db, f"DO $$ BEGIN EXECUTE $q${existing}$q$; END $$")
    settings = MigrationSettings(migrations_dir=folder, file_format=file_format)

    imported = await import_history(empty_db, settings)
    # The first file would fail if it ran again (its table exists); only the second one runs.
    await apply_migrations(empty_db, folder, file_format=file_format)

    assert imported.source == source and len(imported.files) == 1
    assert [v for v, ok in await history(empty_db) if ok] == sorted(f.version for f in imported.files) + [
        max(int(name.lstrip("V").split("_")[0]) for name in files)
    ]
    with pytest.raises(HistoryImportRefused, match="already has applied migrations"):
        await import_history(empty_db, settings)


async def test_import_history_refuses_a_dirty_golang_migrate_version(empty_db: str, tmp_path: Path) -> None:
    await fetchval(empty_db, "CREATE TABLE schema_migrations (version bigint, dirty boolean)")
    await fetchval(empty_db, "INSERT INTO schema_migrations VALUES (2, true)")
    settings = MigrationSettings(migrations_dir=write_migrations(tmp_path, GOLANG), file_format="golang-migrate")
    with pytest.raises(HistoryImportRefused, match="marked version 2 dirty"):
        await import_history(empty_db, settings)


async def test_import_history_command(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, FLYWAY)
    await fetchval(empty_db, f"DO $$ BEGIN EXECUTE $q${IMPORTS[2][2]}$q$; END $$")

    code, out, err = await cli(
        "import-history", "--format", "flyway", "--migrations-dir", str(folder), "--database-url", empty_db
    )

    assert code == 0, err
    assert out == (
        "recorded V1__widgets.sql as applied\nimported 1 applied versions from Flyway's flyway_schema_history\n"
    )
