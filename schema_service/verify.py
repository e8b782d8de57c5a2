"""Is the live schema what the migrations produce? Build it in a scratch database and diff catalogs.

No hand-maintained list of expected objects: the scratch database, migrated to the live
database's version, is the expectation (what is compared: schema_service.catalog). The scratch
database first gets the live database's `ALTER DATABASE ... SET` settings (search_path, custom
settings the migrations read), so that it is built as the live one was; the report names them.
A failure while building it is a ScratchBuildFailed that says so, never a live migration failure.
A partition the live database has beyond the migrations' (the metrics store adds them at run
time) is not drift; a missing or changed one is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

import asyncpg

from schema_service.catalog import ADDED_AT_RUN_TIME, Snapshot, snapshot
from schema_service.config import MigrationSettings
from schema_service.database import DATABASE_FAILURES, with_database
from schema_service.errors import SchemaServiceError
from schema_service.migrate import history
from schema_service.migrate.connections import connect
from schema_service.migrate.errors import ScratchBuildFailed, ScratchDatabaseUnavailable
from schema_service.migrate.runner import apply_migrations

DiffKind = Literal["missing", "unexpected", "changed"]

# Database-level settings that apply to the verifying role in the live database, in the order PostgreSQL
# applies them (database-wide, then the role's own in that database).
_LIVE_SETTINGS = """
    SELECT unnest(s.setconfig) FROM pg_db_role_setting s
    WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = session_user))
    ORDER BY s.setrole <> 0"""


@dataclass(frozen=True)
class Difference:
    object_kind: str
    object_name: str
    kind: DiffKind
    expected: str
    actual: str

    def __str__(self) -> str:
        if self.kind == "missing":
            return f"missing {self.object_kind} {self.object_name}: expected {self.expected}"
        if self.kind == "unexpected":
            return f"unexpected {self.object_kind} {self.object_name}: {self.actual}"
        return f"changed {self.object_kind} {self.object_name}: expected {self.expected}, found {self.actual}"


def diff(expected: Snapshot, actual: Snapshot) -> list[Difference]:
    """Object by object, sorted by kind then name."""
    out = []
    for key in sorted(expected.keys() | actual.keys()):
        want, have = expected.get(key), actual.get(key)
        if want == have or (want is None and key[0] in ADDED_AT_RUN_TIME):
            continue
        kind: DiffKind = "missing" if have is None else "unexpected" if want is None else "changed"
        out.append(Difference(key[0], key[1], kind, want or "", have or ""))
    return out


@dataclass(frozen=True)
class Verification:
    """The differences, and the live database's settings the scratch database was given."""

    differences: list[Difference]
    settings: list[str] = field(default_factory=list)


async def verify(
    dsn: str, settings: MigrationSettings, *, scratch_url: str | None = None, grants: bool = True
) -> list[Difference]:
    """Differences between the live database and a scratch database migrated to the live version."""
    return (await verification(dsn, settings, scratch_url=scratch_url, grants=grants)).differences


async def verification(
    dsn: str, settings: MigrationSettings, *, scratch_url: str | None = None, grants: bool = True
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
    expected = await scratch.snapshot(grants=grants)
    return Verification(diff(expected, actual), database_settings)


@dataclass(frozen=True)
class _Scratch:
    """A throw-away database on `server_dsn`'s server: the live database's settings, then the migrations."""

    server_dsn: str
    settings: MigrationSettings
    target: int
    database_settings: list[str]

    async def snapshot(self, *, grants: bool) -> Snapshot:
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
                return await self._build(admin, name, grants=grants)
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    async def _build(self, admin: asyncpg.Connection, name: str, *, grants: bool) -> Snapshot:
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
            return await snapshot(scratch, grants=grants)
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
