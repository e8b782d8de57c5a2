"""Is the live schema what the migrations produce? Build it in a scratch database and diff catalogs.

No hand-maintained list of expected objects: the scratch database, migrated to the live
database's version, is the expectation (what is compared: schema_service.drift.catalog). The scratch
database first gets the live database's `ALTER DATABASE ... SET` settings (search_path, custom
settings the migrations read), so that it is built as the live one was; the report names them.
A failure while building it is a ScratchBuildFailed that says so, never a live migration failure.
A partition the live database has beyond the migrations' (the metrics store adds them at run
time) is not drift; a missing or changed one is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg

from schema_service.config import MigrationSettings
from schema_service.database import DATABASE_FAILURES, with_database
from schema_service.drift.catalog import Difference, Snapshot, diff, snapshot
from schema_service.drift.repair import Creations, RepairPlan, creations, plan
from schema_service.errors import SchemaServiceError
from schema_service.migrate import history
from schema_service.migrate.connections import connect
from schema_service.migrate.errors import ScratchBuildFailed, ScratchDatabaseUnavailable
from schema_service.migrate.runner import apply_migrations

__all__ = ["Difference", "Verification", "diff", "verification", "verify"]

# Database-level settings that apply to the verifying role in the live database, in the order PostgreSQL
# applies them (database-wide, then the role's own in that database).
_LIVE_SETTINGS = """
    SELECT unnest(s.setconfig) FROM pg_db_role_setting s
    WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = session_user))
    ORDER BY s.setrole <> 0"""


@dataclass(frozen=True)
class Verification:
    """The differences, and the live database's settings the scratch database was given."""

    differences: list[Difference]
    settings: list[str] = field(default_factory=list)
    # With plan_repair: the SQL that brings the live database back (schema_service.drift.repair).
    repair: RepairPlan | None = None


async def verify(
    dsn: str, settings: MigrationSettings, *, scratch_url: str | None = None, grants: bool = True
) -> list[Difference]:
    """Differences between the live database and a scratch database migrated to the live version."""
    return (await verification(dsn, settings, scratch_url=scratch_url, grants=grants)).differences


async def verification(
    dsn: str,
    settings: MigrationSettings,
    *,
    scratch_url: str | None = None,
    grants: bool = True,
    plan_repair: bool = False,
) -> Verification:
    """verify(), also saying which database settings were copied to the scratch database."""
    live = await connect(dsn, "schema-service-verify")
    try:
        applied = [row.version for row in await history.read(live) if row.success]
        database_settings = [str(row[0]) for row in await live.fetch(_LIVE_SETTINGS)]
        actual = await snapshot(live, grants=grants)
    finally:
        await live.close()
    # Version 0 is a version like any other: "nothing applied" is an empty history, never version 0.
    target = max(applied) if applied else -1
    scratch = _Scratch(scratch_url or dsn, settings, target, database_settings)
    expected, create = await scratch.snapshot(grants=grants, plan_repair=plan_repair)
    differences = diff(expected, actual)
    repair = plan(differences, create) if plan_repair else None
    return Verification(differences, database_settings, repair)


@dataclass(frozen=True)
class _Scratch:
    """A throw-away database on `server_dsn`'s server: the live database's settings, then the migrations."""

    server_dsn: str
    settings: MigrationSettings
    target: int
    database_settings: list[str]

    async def snapshot(self, *, grants: bool, plan_repair: bool) -> tuple[Snapshot, Creations]:
        name = f"schema_verify_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(self.server_dsn)
        try:
            try:
                await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
            except asyncpg.InsufficientPrivilegeError as exc:
                raise ScratchDatabaseUnavailable(
                    f"cannot create a scratch database ({exc}); pass --scratch-url (scratch_url) naming a server "
                    "where the role may create databases"
                ) from exc
            try:
                return await self._build(admin, name, grants=grants, plan_repair=plan_repair)
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    async def _build(
        self, admin: asyncpg.Connection, name: str, *, grants: bool, plan_repair: bool
    ) -> tuple[Snapshot, Creations]:
        try:
            await _copy_settings(admin, name, self.database_settings)
            scratch_dsn = with_database(self.server_dsn, name)
            await apply_migrations(
                scratch_dsn, self.settings.migrations_dir, target=self.target, file_format=self.settings.file_format
            )
        except SchemaServiceError as exc:
            raise self._failed(exc.message) from exc
        except DATABASE_FAILURES as exc:
            raise self._failed(f"{getattr(exc, 'sqlstate', '') or type(exc).__name__}: {exc}") from exc
        scratch = await asyncpg.connect(scratch_dsn)
        try:
            return await snapshot(scratch, grants=grants), await creations(scratch) if plan_repair else {}
        finally:
            await scratch.close()

    def _failed(self, why: str) -> ScratchBuildFailed:
        upto = f"up to version {self.target}" if self.target >= 0 else "none"
        given = ", ".join(self.database_settings) or "none"
        return ScratchBuildFailed(
            "building the scratch database that verify compares against failed (nothing in the live database "
            f"was changed; migrations applied to it: {upto}; live database settings given to it: {given}): {why}"
        )


async def _copy_settings(admin: asyncpg.Connection, database: str, items: list[str]) -> None:
    """`ALTER DATABASE ... SET` each live `name=value`, taking the value through set_config so that it is
    parsed exactly as PostgreSQL stored it (lists such as search_path, custom `ext.flag` settings)."""
    async with admin.transaction():
        for item in items:
            setting, _, value = item.partition("=")
            await admin.execute("SELECT set_config($1, $2, true)", setting, value)
            quoted = ".".join('"' + part.replace('"', '""') + '"' for part in setting.split("."))
            await admin.execute(f'ALTER DATABASE "{database}" SET {quoted} FROM CURRENT')
