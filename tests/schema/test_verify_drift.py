"""verify on a small schema holding every compared kind: each drift below is reported, partitions the
live database adds are not, and the scratch database is built with the live database's settings."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from schema_service.config import MigrationSettings
from schema_service.drift.verify import verification, verify
from schema_service.migrate import apply_migrations
from schema_service.migrate.errors import ScratchBuildFailed
from tests.pg import database_of
from tests.schema.migration_fixtures.helpers import fetchval, write_migrations
from tests.schema.test_migrate_cli import cli

KINDS = """
CREATE COLLATION plain_c FROM "C";
CREATE COLLATION spare_c FROM "C";
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TYPE pair AS (a integer, b text);
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE notes (id bigint, kind text NOT NULL, owner_name text) PARTITION BY LIST (kind);
CREATE TABLE issue_notes PARTITION OF notes FOR VALUES IN ('issue');
CREATE TABLE pr_notes PARTITION OF notes FOR VALUES IN ('pr');
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON notes USING (owner_name = current_user);
CREATE POLICY mine ON notes FOR SELECT USING (owner_name = current_user);
CREATE TABLE secrets (id integer);
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
CREATE TABLE plain (
    id integer,
    n integer DEFAULT 1,
    doubled integer GENERATED ALWAYS AS (n * 2) STORED,
    label text COLLATE plain_c
);
CREATE SEQUENCE plain_id_seq OWNED BY plain.id;
CREATE SEQUENCE plain_n_seq AS integer OWNED BY plain.n;
CREATE VIEW recent AS SELECT id FROM plain WHERE id > 10;
CREATE FUNCTION twice(x integer) RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT x * 2 $$;
COMMENT ON TABLE plain IS 'plain table';
GRANT SELECT ON plain TO PUBLIC;
"""

MUTATIONS = [
    ("DROP TABLE issue_notes", ("partition", "public.issue_notes", "missing")),
    ("ALTER TABLE notes DISABLE ROW LEVEL SECURITY", ("table", "public.notes", "changed")),
    ("ALTER TABLE secrets FORCE ROW LEVEL SECURITY", ("table", "public.secrets", "changed")),
    ("DROP POLICY own ON notes", ("policy", "public.notes.own", "missing")),
    ("ALTER POLICY mine ON notes USING (true)", ("policy", "public.notes.mine", "changed")),
    ("REVOKE SELECT ON plain FROM PUBLIC", ("grant", "table public.plain", "changed")),
    ("GRANT CREATE ON SCHEMA public TO PUBLIC", ("grant", "schema public", "changed")),
    ("REVOKE EXECUTE ON FUNCTION twice(integer) FROM PUBLIC", ("grant", "function public.twice(x integer)", "changed")),
    ("CREATE DOMAIN extra AS text", ("domain", "public.extra", "unexpected")),
    ("ALTER DOMAIN positive DROP CONSTRAINT positive_check", ("domain", "public.positive", "changed")),
    ("CREATE TYPE triple AS (a integer)", ("type", "public.triple", "unexpected")),
    ("ALTER TYPE pair ADD ATTRIBUTE c integer", ("type", "public.pair", "changed")),
    ("ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok'", ("enum", "public.mood", "changed")),
    ("ALTER SEQUENCE plain_id_seq OWNED BY NONE", ("sequence", "public.plain_id_seq", "changed")),
    ("ALTER SEQUENCE plain_n_seq AS smallint", ("sequence", "public.plain_n_seq", "changed")),
    ("CREATE OR REPLACE VIEW recent AS SELECT id FROM plain WHERE id > 20", ("view", "public.recent", "changed")),
    ("ALTER FUNCTION twice(integer) STABLE", ("function", "public.twice(x integer)", "changed")),
    ("ALTER TABLE plain ALTER COLUMN n SET DEFAULT 5", ("column", "public.plain.n", "changed")),
    ("ALTER TABLE plain ALTER COLUMN doubled DROP EXPRESSION", ("column", "public.plain.doubled", "changed")),
    ('ALTER TABLE plain ALTER COLUMN label TYPE text COLLATE "C"', ("column", "public.plain.label", "changed")),
    ("DROP COLLATION spare_c", ("collation", "public.spare_c", "missing")),
    ("COMMENT ON TABLE plain IS 'edited'", ("comment", "table public.plain", "changed")),
    ("COMMENT ON COLUMN plain.n IS 'new'", ("comment", "table column public.plain.n", "unexpected")),
]


@pytest.fixture(scope="module")
def kinds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_migrations(tmp_path_factory.mktemp("kinds"), {"001_kinds.sql": KINDS})


@pytest.fixture(scope="module")
async def kinds_template(pg_admin_dsn: str, kinds_dir: Path) -> AsyncIterator[str]:
    """A database migrated with KINDS, copied for each test (CREATE DATABASE ... TEMPLATE)."""
    name = f"tpl_kinds_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        await apply_migrations(with_db(pg_admin_dsn, name), kinds_dir)
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def live(pg_admin_dsn: str, kinds_template: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{kinds_template}"')
        yield with_db(pg_admin_dsn, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def with_db(dsn: str, name: str) -> str:
    from schema_service.database import with_database

    return with_database(dsn, name)


@pytest.fixture(scope="module")
async def drift_found(
    pg_admin_dsn: str, kinds_template: str, kinds_dir: Path
) -> AsyncIterator[set[tuple[str, str, str]]]:
    """Every mutation applied to one copy (each touches an object of its own), then one verify: the
    scratch database costs seconds on a busy server, so it is built once for all kinds."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{kinds_template}"')
        dsn = with_db(pg_admin_dsn, name)
        for mutation, _ in MUTATIONS:
            await fetchval(dsn, mutation)
        differences = await verify(dsn, MigrationSettings(migrations_dir=kinds_dir))
        yield {(d.object_kind, d.object_name, d.kind) for d in differences}
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.parametrize(("mutation", "expected"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_each_kind_of_drift_is_reported(
    drift_found: set[tuple[str, str, str]], mutation: str, expected: tuple[str, str, str]
) -> None:
    assert expected in drift_found, sorted(drift_found)


def test_nothing_but_the_mutations_is_reported(drift_found: set[tuple[str, str, str]]) -> None:
    assert drift_found == {expected for _, expected in MUTATIONS}


async def test_a_partition_added_at_run_time_is_not_drift(live: str, kinds_dir: Path) -> None:
    await fetchval(live, "CREATE TABLE other_notes PARTITION OF notes FOR VALUES IN ('other')")

    assert await verify(live, MigrationSettings(migrations_dir=kinds_dir)) == []


async def test_grants_can_be_left_out(live: str, kinds_dir: Path) -> None:
    await fetchval(live, "REVOKE SELECT ON plain FROM PUBLIC")

    assert await verify(live, MigrationSettings(migrations_dir=kinds_dir), grants=False) == []


async def test_an_extension_and_its_version(live: str, tmp_path: Path) -> None:
    if not await fetchval(live, "SELECT count(*) FROM pg_available_extension_versions WHERE name = 'citext'"):
        pytest.skip("the server has no citext extension (contrib)")
    folder = write_migrations(
        tmp_path, {"001_kinds.sql": KINDS, "002_ext.sql": "CREATE EXTENSION citext VERSION '1.5';"}
    )
    settings = MigrationSettings(migrations_dir=folder)
    await apply_migrations(live, folder)
    await fetchval(live, "ALTER EXTENSION citext UPDATE TO '1.6'")

    assert [(d.object_kind, d.object_name, d.kind) for d in await verify(live, settings)] == [
        ("extension", "citext", "changed")
    ]


SETTINGS_SQL = """
CREATE SCHEMA IF NOT EXISTS storage;
CREATE TABLE objects (id integer);
DO $$ BEGIN
  IF current_setting('storage.multitenant', true) IS DISTINCT FROM 'true' THEN
    RAISE EXCEPTION 'this migration needs storage.multitenant = true';
  END IF;
END $$;
"""


async def test_the_scratch_database_gets_the_live_database_settings(empty_db: str, tmp_path: Path) -> None:
    database = database_of(empty_db)
    await fetchval(empty_db, f'ALTER DATABASE "{database}" SET search_path = storage, public')
    await fetchval(empty_db, f'ALTER DATABASE "{database}" SET storage.multitenant = true')
    folder = write_migrations(tmp_path, {"001_storage.sql": SETTINGS_SQL})
    await apply_migrations(empty_db, folder)
    assert await fetchval(empty_db, "SELECT to_regclass('storage.objects') IS NOT NULL")

    report = await verification(empty_db, MigrationSettings(migrations_dir=folder))

    assert report.differences == []
    assert report.settings == ["search_path=storage, public", "storage.multitenant=true"]
    code, out, err = await cli("verify", "--ignore-grants", "--migrations-dir", str(folder), "--database-url", empty_db)
    assert (code, out) == (
        0,
        "scratch database built with the live database's settings: search_path=storage, public; "
        "storage.multitenant=true\nschema matches the migrations\n",
    ), err


async def test_a_failure_building_the_scratch_database_says_so(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_a.sql": "CREATE TABLE a (id integer);\n"})
    await apply_migrations(empty_db, folder)
    (folder / "001_a.sql").write_text("CREATE TABLE a (id integer);\nSELECT 1 / 0;\n")

    with pytest.raises(ScratchBuildFailed, match=r"building the scratch database .* 001_a.sql:2:1: 22012"):
        await verify(empty_db, MigrationSettings(migrations_dir=folder))
