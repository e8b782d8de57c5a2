"""Is the live schema what the migrations produce? Build it in a scratch database and diff catalogs.

No hand-maintained list of expected objects: the scratch database, migrated to the live
database's version, is the expectation. Compared: schemas, tables (and partitioning), views,
sequences, columns with types, nullability and defaults, constraints, indexes (with validity),
triggers, functions and enum values. Partitions are part of their parent (the metrics store
creates them at run time), so a partition and its indexes, constraints and cloned triggers are
never drift. The engine's own schema `schema_service` is left out.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import asyncpg

from schema_service.config import MigrationSettings
from schema_service.database import with_database
from schema_service.migrate import history
from schema_service.migrate.connections import connect
from schema_service.migrate.errors import ScratchDatabaseUnavailable
from schema_service.migrate.runner import apply_migrations

DiffKind = Literal["missing", "unexpected", "changed"]

_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'schema_service') AND n.nspname NOT LIKE 'pg\\_%'"


def _not_extension(catalog: str, oid: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{catalog}'::regclass "
        f"AND e.objid = {oid} AND e.deptype = 'e')"
    )


_REL = f"{_SCHEMAS} AND NOT c.relispartition AND {_not_extension('pg_class', 'c.oid')}"

CATALOG_QUERIES: dict[str, str] = {
    "schema": f"SELECT quote_ident(n.nspname), '' FROM pg_namespace n WHERE {_SCHEMAS}",
    "table": f"""SELECT format('%I.%I', n.nspname, c.relname),
                    CASE c.relkind WHEN 'p' THEN 'PARTITION BY ' || pg_get_partkeydef(c.oid) ELSE 'heap' END
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'f') AND {_REL}""",
    "view": f"""SELECT format('%I.%I', n.nspname, c.relname), pg_get_viewdef(c.oid)
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('v', 'm') AND {_REL}""",
    "sequence": f"""SELECT format('%I.%I', n.nspname, c.relname),
                       format('%s increment %s min %s max %s cycle %s', format_type(s.seqtypid, NULL),
                              s.seqincrement, s.seqmin, s.seqmax, s.seqcycle)
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    JOIN pg_sequence s ON s.seqrelid = c.oid
                    WHERE {_REL}""",
    "column": f"""SELECT format('%I.%I.%I', n.nspname, c.relname, a.attname),
                     format_type(a.atttypid, a.atttypmod)
                     || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                     || CASE WHEN a.attgenerated = 's' THEN ' GENERATED ALWAYS AS ' ELSE ' DEFAULT ' END
                     || coalesce(pg_get_expr(d.adbin, d.adrelid), 'none')
                     || CASE a.attidentity WHEN 'a' THEN ' IDENTITY ALWAYS' WHEN 'd' THEN ' IDENTITY BY DEFAULT'
                        ELSE '' END
                  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                  JOIN pg_namespace n ON n.oid = c.relnamespace
                  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f', 'v', 'm') AND {_REL}""",
    "constraint": f"""SELECT format('%I.%I.%I', n.nspname, c.relname, k.conname), pg_get_constraintdef(k.oid)
                      FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
                      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_REL}""",
    "index": f"""SELECT format('%I.%I', n.nspname, c.relname),
                    pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE NOT t.relispartition AND {_REL}""",
    "trigger": f"""SELECT format('%I.%I.%I', n.nspname, c.relname, g.tgname),
                      pg_get_triggerdef(g.oid) || CASE g.tgenabled WHEN 'D' THEN ' DISABLED' ELSE '' END
                   FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE NOT g.tgisinternal AND {_REL}""",
    "function": f"""SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
                       pg_get_functiondef(p.oid)
                    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE p.prokind IN ('f', 'p', 'w') AND {_SCHEMAS} AND {_not_extension("pg_proc", "p.oid")}""",
    "enum": f"""SELECT format('%I.%I', n.nspname, t.typname),
                   string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE {_SCHEMAS} AND {_not_extension("pg_type", "t.oid")} GROUP BY n.nspname, t.typname""",
    "extension": "SELECT quote_ident(extname), '' FROM pg_extension WHERE extname <> 'plpgsql'",
}


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


Snapshot = dict[tuple[str, str], str]


async def snapshot(conn: asyncpg.Connection) -> Snapshot:
    """Every compared object of the database: (kind, qualified name) -> normalised definition."""
    found: Snapshot = {}
    for kind, query in CATALOG_QUERIES.items():
        for name, definition in await conn.fetch(query):
            found[(kind, name)] = definition
    return found


def diff(expected: Snapshot, actual: Snapshot) -> list[Difference]:
    """Object by object, sorted by kind then name."""
    out = []
    for key in sorted(expected.keys() | actual.keys()):
        want, have = expected.get(key), actual.get(key)
        if want == have:
            continue
        kind: DiffKind = "missing" if have is None else "unexpected" if want is None else "changed"
        out.append(Difference(key[0], key[1], kind, want or "", have or ""))
    return out


async def verify(dsn: str, settings: MigrationSettings, *, scratch_url: str | None = None) -> list[Difference]:
    """Differences between the live database and a scratch database migrated to the live version."""
    live = await connect(dsn, "schema-service-verify")
    try:
        applied = [row.version for row in await history.read(live) if row.success]
        actual = await snapshot(live)
    finally:
        await live.close()
    # Version 0 is a version like any other: "nothing applied" is an empty history, never version 0.
    target = max(applied) if applied else -1
    expected = await _expected(scratch_url or dsn, settings, target)
    return diff(expected, actual)


async def _expected(server_dsn: str, settings: MigrationSettings, target: int) -> Snapshot:
    """Build the expected schema in a throw-away database on `server_dsn`'s server."""
    name = f"schema_verify_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        except asyncpg.InsufficientPrivilegeError as exc:
            raise ScratchDatabaseUnavailable(
                f"cannot create a scratch database ({exc}); pass --scratch-url (scratch_url) naming a server "
                "where the role may create databases"
            ) from exc
        try:
            scratch_dsn = with_database(server_dsn, name)
            await apply_migrations(scratch_dsn, settings.migrations_dir, target=target)
            scratch = await asyncpg.connect(scratch_dsn)
            try:
                return await snapshot(scratch)
            finally:
                await scratch.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
