"""`schema-service import-history`: take over another migrator's history, so that a team switching tools
re-runs nothing. The other tool's table is read, never changed:

    dbmate          schema_migrations (version text): one row per applied file
    golang-migrate  schema_migrations (version bigint, dirty boolean): one row, every file up to it applied
    flyway          flyway_schema_history (version, success, ...): one row per applied versioned file
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from schema_service.config import MigrationSettings
from schema_service.migrate import history
from schema_service.migrate.errors import HistoryImportRefused
from schema_service.migrate.files import MigrationFile, load_dir
from schema_service.migrate.ops import locked, record_as_applied


@dataclass(frozen=True)
class Imported:
    source: str
    files: list[MigrationFile]


async def import_history(dsn: str, settings: MigrationSettings) -> Imported:
    """Record as applied every file the other tool's history says it applied; refuse what does not fit."""
    files = {f.version: f for f in load_dir(settings.migrations_dir, settings.file_format)}
    async with locked(dsn, settings) as conn, conn.transaction():
        applied = [row.version for row in await history.read(conn) if row.success]
        if applied:
            raise HistoryImportRefused(
                f"the database already has applied migrations in {history.SCHEMA} (up to {max(applied)}); "
                "import-history only adopts a database without history"
            )
        source, versions = await _foreign_history(conn, sorted(files))
        unknown = sorted(versions - files.keys())
        if unknown:
            raise HistoryImportRefused(
                f"{source} records version(s) {', '.join(map(str, unknown[:10]))} as applied, but "
                f"{settings.migrations_dir} has no such file: restore the files (or --format) first"
            )
        taken = [files[v] for v in sorted(versions)]
        await record_as_applied(conn, taken, applied_by=f"import-history from {source}")
    return Imported(source, taken)


async def _foreign_history(conn: asyncpg.Connection, known: list[int]) -> tuple[str, set[int]]:
    if await conn.fetchval("SELECT to_regclass('flyway_schema_history') IS NOT NULL"):
        return "Flyway's flyway_schema_history", await _flyway(conn)
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        raise HistoryImportRefused(
            "no other migrator's history found: neither schema_migrations (dbmate, golang-migrate) nor "
            "flyway_schema_history (Flyway) is on the search_path"
        )
    dirty = await conn.fetchval(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'schema_migrations'::regclass AND attname = 'dirty'"
    )
    if dirty:
        return "golang-migrate's schema_migrations", await _golang_migrate(conn, known)
    rows = await conn.fetch("SELECT version FROM schema_migrations")
    return "dbmate's schema_migrations", {_version(str(row["version"]), "dbmate") for row in rows}


async def _golang_migrate(conn: asyncpg.Connection, known: list[int]) -> set[int]:
    rows = await conn.fetch("SELECT version, dirty FROM schema_migrations")
    if len(rows) != 1:
        raise HistoryImportRefused(f"golang-migrate's schema_migrations should hold one row, it holds {len(rows)}")
    if rows[0]["dirty"]:
        raise HistoryImportRefused(
            f"golang-migrate marked version {rows[0]['version']} dirty (it failed half-way): fix it with "
            "`migrate force` first"
        )
    return {version for version in known if version <= int(rows[0]["version"])}


async def _flyway(conn: asyncpg.Connection) -> set[int]:
    rows = await conn.fetch("SELECT version, success FROM flyway_schema_history WHERE version IS NOT NULL")
    failed = [row["version"] for row in rows if not row["success"]]
    if failed:
        raise HistoryImportRefused(
            f"Flyway recorded failed migration(s) {', '.join(failed[:10])}: repair them with Flyway first"
        )
    return {_version(str(row["version"]), "Flyway") for row in rows}


def _version(text: str, tool: str) -> int:
    if not text.isdigit():
        raise HistoryImportRefused(f"{tool} version {text!r} is not an integer; only integer versions are supported")
    return int(text)
