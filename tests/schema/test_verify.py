"""verify: a scratch database built from the migrations, diffed against the live catalog, one mutation per kind."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from schema_service.config import MigrationSettings
from schema_service.database import with_database
from schema_service.drift.verify import Difference, verify
from schema_service.migrate import apply_migrations
from schema_service.migrate.errors import ScratchDatabaseUnavailable
from tests.pg import dsn_with_user
from tests.schema.migration_fixtures.helpers import fetchval, write_migrations

SETTINGS = MigrationSettings()

MUTATIONS = [
    ("DROP TABLE capability_gaps", ("table", "public.capability_gaps", "missing")),
    ("CREATE TABLE stray (x int)", ("table", "public.stray", "unexpected")),
    ("ALTER TABLE users DROP COLUMN last_login_at", ("column", "public.users.last_login_at", "missing")),
    (
        "ALTER TABLE capability_gaps ALTER COLUMN description TYPE varchar(500)",
        ("column", "public.capability_gaps.description", "changed"),
    ),
    ("ALTER TABLE users ALTER COLUMN status DROP DEFAULT", ("column", "public.users.status", "changed")),
    ("ALTER TABLE users ALTER COLUMN password_hash SET NOT NULL", ("column", "public.users.password_hash", "changed")),
    (
        "ALTER TABLE user_ai_agents DROP CONSTRAINT user_ai_agents_temperature_check",
        ("constraint", "public.user_ai_agents.user_ai_agents_temperature_check", "missing"),
    ),
    ("DROP INDEX capability_gaps_user_id_idx", ("index", "public.capability_gaps_user_id_idx", "missing")),
    (
        "CREATE INDEX users_display_name_idx ON users (display_name)",
        ("index", "public.users_display_name_idx", "unexpected"),
    ),
    ("DROP TRIGGER users_set_updated_at ON users", ("trigger", "public.users.users_set_updated_at", "missing")),
    (
        "CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION set_updated_at()",
        ("trigger", "public.users.users_touch", "unexpected"),
    ),
    (
        "CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        ("function", "public.set_updated_at()", "changed"),
    ),
    ("ALTER TYPE user_role ADD VALUE 'owner'", ("enum", "public.user_role", "changed")),
    ("CREATE VIEW active_users AS SELECT id FROM users", ("view", "public.active_users", "unexpected")),
]


async def test_freshly_migrated_database_matches(migrated_db: str) -> None:
    assert await verify(migrated_db, SETTINGS) == []


@pytest.mark.parametrize(("mutation", "expected"), MUTATIONS, ids=[m[1][0] + "-" + m[1][2] for m in MUTATIONS])
async def test_each_kind_of_drift_is_reported(migrated_db: str, mutation: str, expected: tuple[str, str, str]) -> None:
    await fetchval(migrated_db, mutation)

    differences = await verify(migrated_db, SETTINGS)

    found = {(d.object_kind, d.object_name, d.kind) for d in differences}
    assert expected in found, [str(d) for d in differences]
    if expected[0] not in ("table", "view"):
        assert len(differences) == 1, [str(d) for d in differences]


async def test_invalid_index_is_drift(migrated_db: str) -> None:
    conn = await asyncpg.connect(migrated_db)
    try:
        await conn.execute("DROP INDEX users_email_key")
        await conn.execute("INSERT INTO users (email) VALUES ('A@example.com'), ('a@example.com')")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (lower(email))")
    finally:
        await conn.close()

    differences = await verify(migrated_db, SETTINGS)

    assert [(d.object_kind, d.object_name, d.kind) for d in differences] == [
        ("index", "public.users_email_key", "changed")
    ]
    assert differences[0].actual.endswith(" INVALID") and not differences[0].expected.endswith(" INVALID")


async def test_partitions_of_a_declared_partitioned_table_are_not_drift(migrated_db: str) -> None:
    parent = await fetchval(
        migrated_db,
        "SELECT c.relname FROM pg_class c WHERE c.relkind = 'p' AND c.relnamespace = 'public'::regnamespace LIMIT 1",
    )
    if parent is None:
        pytest.skip("the schema declares no partitioned table")
    await fetchval(
        migrated_db,
        f"CREATE TABLE {parent}_p20300101 PARTITION OF {parent} FOR VALUES FROM ('2030-01-01') TO ('2030-01-02')",
    )
    assert await verify(migrated_db, SETTINGS) == []


async def test_scratch_url_when_the_live_role_may_not_create_databases(migrated_db: str, pg_admin_dsn: str) -> None:
    role = f"r_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(migrated_db)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
        await admin.execute(f"GRANT USAGE ON SCHEMA schema_service TO {role}")
        await admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA schema_service TO {role}")
        live = dsn_with_user(migrated_db, role)
        with pytest.raises(ScratchDatabaseUnavailable, match="--scratch-url"):
            await verify(live, SETTINGS)
        assert await verify(live, SETTINGS, scratch_url=with_database(pg_admin_dsn, "postgres")) == []
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


def test_difference_reads_well() -> None:
    assert (
        str(Difference("column", "public.t.c", "missing", "integer", ""))
        == "missing column public.t.c: expected integer"
    )


async def test_version_zero_is_a_version_like_any_other(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path,
        {"000_prereq.sql": "CREATE TABLE prereq (id int);\n", "001_next.sql": "CREATE TABLE next (id int);\n"},
    )
    await apply_migrations(empty_db, folder, target=0)

    assert await verify(empty_db, MigrationSettings(migrations_dir=folder)) == []
