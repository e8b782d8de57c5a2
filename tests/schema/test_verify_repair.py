"""verify --plan-repair: the outage's kinds of damage to the project's schema, planned, written as the next
migration files, applied like any other; verify then reports a match (the repair files being no-ops in the
scratch database, where nothing is missing)."""

from __future__ import annotations

import shutil
from pathlib import Path

from schema_service.config import PACKAGE_MIGRATIONS, MigrationSettings
from schema_service.drift.verify import verification, verify
from schema_service.migrate import apply_migrations
from tests.schema.migration_fixtures.helpers import fetchval, write_migrations
from tests.schema.test_migrate_cli import cli
from tests.schema.test_verify_drift import KINDS

DAMAGE = (
    "ALTER TABLE system_performance_metrics DROP COLUMN value, DROP COLUMN metadata",
    "ALTER TABLE metric_series DROP COLUMN unit",
    "DROP TABLE capability_gaps CASCADE",
    "CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION set_updated_at()",
    "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'user_ai_agents_provider_id_idx'::regclass",
)


async def test_the_outage_damage_is_planned_applied_and_gone(migrated_db: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(PACKAGE_MIGRATIONS, folder)
    for damage in DAMAGE:
        await fetchval(migrated_db, damage)

    code, out, err = await cli(
        "verify",
        "--plan-repair",
        "--write",
        "100_repair.sql",
        "--migrations-dir",
        str(folder),
        "--database-url",
        migrated_db,
    )

    assert code == 0, err
    assert out == f"wrote {folder / '100_repair.sql'}\nwrote {folder / '101_repair_indexes.sql'}\n"
    repair = (folder / "100_repair.sql").read_text()
    assert "ADD COLUMN IF NOT EXISTS value double precision NOT NULL;" in repair
    assert "DROP TRIGGER IF EXISTS users_touch ON public.users;" in repair
    assert "CREATE TABLE IF NOT EXISTS public.capability_gaps ();" in repair
    indexes = (folder / "101_repair_indexes.sql").read_text()
    assert indexes.startswith("-- migrate: no-transaction\n")
    assert "DROP INDEX CONCURRENTLY IF EXISTS public.user_ai_agents_provider_id_idx;" in indexes
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS capability_gaps_user_id_idx" in indexes

    await apply_migrations(migrated_db, folder)

    assert await verify(migrated_db, MigrationSettings(migrations_dir=folder)) == []


async def test_a_dropped_partition_rls_and_a_policy_come_back(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_kinds.sql": KINDS})
    await apply_migrations(empty_db, folder)
    damage = ("DROP TABLE issue_notes", "ALTER TABLE notes DISABLE ROW LEVEL SECURITY", "DROP POLICY own ON notes")
    for statement in damage:
        await fetchval(empty_db, statement)
    await fetchval(empty_db, "ALTER TABLE plain ADD COLUMN extra text")

    report = await verification(empty_db, MigrationSettings(migrations_dir=folder), plan_repair=True)

    assert report.repair is not None and not report.repair.concurrent
    sql = report.repair.transactional_sql()
    assert "CREATE TABLE IF NOT EXISTS public.issue_notes PARTITION OF public.notes FOR VALUES IN ('issue');" in sql
    assert "ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;" in sql
    # The extra column is for a person to decide: commented out, never run.
    assert "\n-- ALTER TABLE public.plain DROP COLUMN extra;  -- destroys its data" in sql
    write_migrations(folder, {"002_repair.sql": sql})
    await apply_migrations(empty_db, folder)

    differences = await verify(empty_db, MigrationSettings(migrations_dir=folder))
    found = [(d.object_kind, d.object_name, d.kind) for d in differences]
    assert found == [("column", "public.plain.extra", "unexpected")]
