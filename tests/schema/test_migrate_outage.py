"""The outage, reproduced: a database built by other means (a table lacking columns, a duplicated trigger,
an index that already existed), adopted with `baseline`, found by `verify`, fixed by a repair migration."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from schema_service.config import PACKAGE_MIGRATIONS, MigrationSettings
from schema_service.drift.verify import verify
from schema_service.migrate import apply_migrations
from schema_service.migrate.errors import BaselineRefused, MigrationFailed
from schema_service.migrate.ops import baseline
from tests.schema.migration_fixtures.helpers import FIXTURES, fetch, fetchval, history

OUTAGE_STATE = """
ALTER TABLE users DROP COLUMN password_hash, DROP COLUMN preferences, DROP COLUMN last_login_at;
CREATE TRIGGER set_updated_at_users BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION set_updated_at();
ALTER INDEX user_ai_agents_provider_id_idx RENAME TO idx_agents_provider;
INSERT INTO users (email, display_name) VALUES ('ada@example.com', 'Ada'), ('alan@example.com', 'Alan');
DROP SCHEMA schema_service CASCADE;
"""


async def _outage_database(dsn: str, folder: Path) -> None:
    """The application tables as the old runner left them, with rows, and no migration history."""
    await apply_migrations(dsn, folder, target=7)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(OUTAGE_STATE)
    finally:
        await conn.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The project's migrations plus the repair migration, numbered into the free 008 slot."""
    target = tmp_path / "migrations"
    shutil.copytree(PACKAGE_MIGRATIONS, target)
    assert not list(target.glob("008_*.sql"))
    shutil.copy(FIXTURES / "outage" / "008_repair_outage_drift.sql", target)
    return target


@pytest.mark.timeout(60)
async def test_baseline_verify_and_repair_migration_fix_the_outage_state(empty_db: str, folder: Path) -> None:
    await _outage_database(empty_db, folder)

    # Without baseline the migrations start from 001 and stop at the first object that exists, cleanly.
    with pytest.raises(MigrationFailed) as caught:
        await apply_migrations(empty_db, folder)
    assert caught.value.filename == "001_shared_functions.sql" and caught.value.sqlstate == "42723"

    adopted = await baseline(empty_db, MigrationSettings(migrations_dir=folder), 7)
    assert [f.version for f in adopted] == [1, 2, 3, 4, 5, 6, 7]
    drift = {
        (d.object_kind, d.object_name, d.kind) for d in await verify(empty_db, MigrationSettings(migrations_dir=folder))
    }
    assert drift == {
        ("column", "public.users.password_hash", "missing"),
        ("column", "public.users.preferences", "missing"),
        ("column", "public.users.last_login_at", "missing"),
        ("constraint", "public.users.users_preferences_check", "missing"),
        ("trigger", "public.users.set_updated_at_users", "unexpected"),
        ("index", "public.user_ai_agents_provider_id_idx", "missing"),
        ("index", "public.idx_agents_provider", "unexpected"),
    }

    version = await apply_migrations(empty_db, folder)

    assert version >= 8
    assert await verify(empty_db, MigrationSettings(migrations_dir=folder)) == []
    rows = await fetch(empty_db, "SELECT email, display_name, preferences FROM users ORDER BY email")
    assert [(r["email"], r["display_name"], r["preferences"]) for r in rows] == [
        ("ada@example.com", "Ada", "{}"),
        ("alan@example.com", "Alan", "{}"),
    ]
    triggers = "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'users'::regclass AND NOT tgisinternal"
    assert await fetchval(empty_db, triggers) == 1


async def test_repair_migration_is_a_no_op_on_a_database_the_migrations_built(empty_db: str, folder: Path) -> None:
    await apply_migrations(empty_db, folder)
    assert (8, True) in await history(empty_db)
    assert await verify(empty_db, MigrationSettings(migrations_dir=folder)) == []


async def test_baseline_refuses_a_database_with_history(migrated_db: str) -> None:
    with pytest.raises(BaselineRefused):
        await baseline(migrated_db, MigrationSettings(), 7)


@pytest.mark.timeout(60)
async def test_index_a_killed_build_left_invalid_is_rebuilt_not_skipped(empty_db: str, folder: Path) -> None:
    """The outage's "index already exists": a CONCURRENTLY build that died left an INVALID index of the
    name a later migration creates with IF NOT EXISTS. The runner drops and rebuilds it."""
    await apply_migrations(empty_db, folder, target=5)
    await fetchval(empty_db, "DROP SCHEMA schema_service CASCADE")
    writer, builder = await asyncpg.connect(empty_db), await asyncpg.connect(empty_db)
    try:
        # An open writer makes the build wait in its second phase, after the catalog entry exists;
        # the lock timeout then kills it there, as a killed runner would.
        await writer.execute("BEGIN; INSERT INTO capability_gaps (fingerprint, capability) VALUES ('f', 'c')")
        await builder.execute("SET lock_timeout = '100ms'")
        with pytest.raises(asyncpg.LockNotAvailableError):
            await builder.execute(
                "CREATE INDEX CONCURRENTLY capability_gaps_open_last_seen_idx "
                "ON capability_gaps (last_seen_at DESC) WHERE status = 'open'"
            )
        await writer.execute("ROLLBACK")
    finally:
        await writer.close()
        await builder.close()
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('capability_gaps_open_last_seen_idx')"
    assert await fetchval(empty_db, valid) is False

    await baseline(empty_db, MigrationSettings(migrations_dir=folder), 5)
    drift = await verify(empty_db, MigrationSettings(migrations_dir=folder))
    assert [(d.object_name, d.kind, d.actual.endswith("INVALID")) for d in drift] == [
        ("public.capability_gaps_open_last_seen_idx", "unexpected", True)
    ]

    await apply_migrations(empty_db, folder)

    assert await fetchval(empty_db, valid) is True
    assert await verify(empty_db, MigrationSettings(migrations_dir=folder)) == []
