"""The migration engine against real PostgreSQL: files run whole, refused statements, errors, checksums, plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from schema_service.config import PACKAGE_MIGRATIONS, MigrationSettings
from schema_service.migrate import apply_migrations
from schema_service.migrate.errors import (
    ChecksumMismatch,
    MigrationFailed,
    MigrationFileError,
    OutOfOrder,
    StatementRefused,
)
from schema_service.migrate.events import MigrationFinished, MigrationStarted, PlanReady, RunDone, StatementFinished
from schema_service.migrate.ops import repair, status
from tests.schema.migration_fixtures.helpers import FIXTURES, fetch, fetchval, history, run, write_migrations


async def test_tricky_quoting_corpus_runs_whole_and_set_does_not_leak(empty_db: str) -> None:
    version = await apply_migrations(empty_db, FIXTURES / "tricky")

    assert version == 2
    rows = await fetch(
        empty_db, 'SELECT "semi;col", "quo""ted", dollar, tagged, note FROM "odd;schema"."Weird;Name" ORDER BY id'
    )
    assert [r["semi;col"] for r in rows] == ["v;1", "data;"]
    assert rows[0]['quo"ted'] == "it's; escaped\n"
    assert rows[0]["dollar"] == "dollar; 'quoted' text"
    assert rows[0]["tagged"] == " $$ nested $$ ; "
    assert rows[0]["note"] == "set; by fill_note; 'trigger'"
    assert await fetchval(empty_db, 'SELECT "odd;schema".plus_two(1)') == 3
    assert await fetchval(empty_db, "SELECT to_regclass('\"odd;schema\".made_in_do') IS NOT NULL")
    assert await fetchval(empty_db, "SELECT to_regclass('public.after_set') IS NOT NULL")
    assert await history(empty_db) == [(1, True), (2, True)]


async def test_project_schema_applies_and_reruns_as_no_op(empty_db: str) -> None:
    first = await run(empty_db, PACKAGE_MIGRATIONS)
    second = await run(empty_db, PACKAGE_MIGRATIONS)

    done = first[-1]
    assert isinstance(done, RunDone) and done.applied_count >= 7
    assert second[-1] == RunDone(done.current_version, 0)
    assert not [e for e in second if isinstance(e, MigrationStarted)]
    columns = await fetch(
        empty_db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
    )
    names = {r["table_name"] for r in columns}
    assert {"users", "ai_agent_providers", "user_ai_agents", "capability_gaps"} <= names


async def test_updated_at_trigger_and_foreign_keys(migrated_db: str) -> None:
    user_id = await fetchval(migrated_db, "INSERT INTO users (email) VALUES ('a@example.com') RETURNING id")
    before = await fetchval(migrated_db, "SELECT updated_at FROM users WHERE id = $1", user_id)
    await fetchval(migrated_db, "UPDATE users SET display_name = 'A' WHERE id = $1", user_id)
    after = await fetchval(migrated_db, "SELECT updated_at FROM users WHERE id = $1", user_id)
    assert after > before
    provider = await fetchval(migrated_db, "SELECT id FROM ai_agent_providers WHERE slug = 'openai'")
    agent = await fetchval(
        migrated_db,
        "INSERT INTO user_ai_agents (user_id, provider_id, name, model) VALUES ($1, $2, 'helper', 'gpt-4o-mini') "
        "RETURNING id",
        user_id,
        provider,
    )
    gap = await fetchval(
        migrated_db, "SELECT record_capability_gap('fp', 'browse the web', $1, $2, 'x')", user_id, agent
    )
    again = await fetchval(
        migrated_db, "SELECT record_capability_gap('fp', 'browse the web', $1, $2, 'y')", user_id, agent
    )
    assert gap == again
    assert await fetchval(migrated_db, "SELECT occurrences FROM capability_gaps WHERE id = $1", gap) == 2
    await fetchval(migrated_db, "DELETE FROM users WHERE id = $1", user_id)
    assert await fetchval(migrated_db, "SELECT count(*) FROM user_ai_agents") == 0
    assert await fetchval(migrated_db, "SELECT user_id FROM capability_gaps WHERE id = $1", gap) is None


async def test_failing_file_reports_position_and_leaves_nothing(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "001_ok.sql": "CREATE TABLE first_table (id int);\n",
            "002_broken.sql": "CREATE TABLE half_done (id int);\nINSERT INTO half_done VALUES (1);\n"
            "SELECT id FROM   missing_table;\n",
            "003_never.sql": "CREATE TABLE never_created (id int);\n",
        },
    )
    with pytest.raises(MigrationFailed) as caught:
        await apply_migrations(empty_db, folder)

    error = caught.value
    assert (error.filename, error.line, error.column, error.sqlstate) == ("002_broken.sql", 3, 18, "42P01")
    assert error.message.startswith('002_broken.sql:3:18: 42P01: relation "missing_table" does not exist')
    assert error.metadata == {"file": "002_broken.sql", "line": "3", "column": "18", "sqlstate": "42P01"}
    assert await fetchval(empty_db, "SELECT to_regclass('half_done')") is None
    assert await fetchval(empty_db, "SELECT to_regclass('never_created')") is None
    assert await history(empty_db) == [(1, True), (2, False)]


async def test_error_without_position_points_at_the_statement(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path, {"001_dup.sql": "-- header\nCREATE TABLE t (id int);\n\n  CREATE TABLE t (id int);\n"}
    )
    with pytest.raises(MigrationFailed) as caught:
        await apply_migrations(empty_db, folder)
    assert (caught.value.line, caught.value.column, caught.value.sqlstate) == (4, 3, "42P07")


async def test_error_inside_do_block_carries_context(empty_db: str, tmp_path: Path) -> None:
    sql = "DO $$\nBEGIN\n  PERFORM 1 / 0;\nEND\n$$;\n"
    with pytest.raises(MigrationFailed) as caught:
        await apply_migrations(empty_db, write_migrations(tmp_path, {"001_do.sql": sql}))
    assert (caught.value.line, caught.value.column, caught.value.sqlstate) == (3, 3, "22012")
    assert "PL/pgSQL function inline_code_block line 3 at PERFORM" in caught.value.message


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("CREATE TABLE a (x int);\nCOMMIT;\n", "transaction control (COMMIT)"),
        ("BEGIN;\nCREATE TABLE a (x int);\n", "transaction control (BEGIN)"),
        ("CREATE TABLE a (x int);\nROLLBACK;\n", "transaction control (ROLLBACK)"),
        ("CREATE TABLE a (x int);\nCREATE INDEX CONCURRENTLY a_x ON a (x);\n", "CREATE INDEX CONCURRENTLY"),
        ("VACUUM;\n", "VACUUM cannot run inside a transaction"),
        ("REINDEX INDEX CONCURRENTLY some_index;\n", "REINDEX CONCURRENTLY"),
    ],
)
async def test_statements_a_transaction_cannot_hold_are_refused_before_anything_runs(
    empty_db: str, tmp_path: Path, sql: str, needle: str
) -> None:
    folder = write_migrations(tmp_path, {"001_fine.sql": "CREATE TABLE fine (x int);\n", "002_bad.sql": sql})
    with pytest.raises(StatementRefused) as caught:
        await apply_migrations(empty_db, folder)
    assert needle in caught.value.message
    assert caught.value.filename == "002_bad.sql"
    if "CONCURRENTLY" in needle or "VACUUM" in needle:
        assert "-- migrate: no-transaction" in caught.value.message
    assert await fetchval(empty_db, "SELECT to_regclass('fine')") is None


async def test_changed_file_is_refused_until_repair(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_a.sql": "CREATE TABLE a (x int);\n"})
    await apply_migrations(empty_db, folder)
    recorded = (await status(empty_db, MigrationSettings(migrations_dir=folder))).applied[0].checksum
    (folder / "001_a.sql").write_text("CREATE TABLE a (x int); -- edited\n")
    write_migrations(folder, {"002_b.sql": "CREATE TABLE b (x int);\n"})

    with pytest.raises(ChecksumMismatch) as caught:
        await apply_migrations(empty_db, folder)
    assert "001_a.sql" in caught.value.message and recorded in caught.value.message
    assert caught.value.metadata["recorded_checksum"] == recorded
    assert await fetchval(empty_db, "SELECT to_regclass('b')") is None
    report = await status(empty_db, MigrationSettings(migrations_dir=folder))
    assert any("001_a.sql was changed" in p for p in report.problems)

    actions = await repair(empty_db, MigrationSettings(migrations_dir=folder))
    assert len(actions) == 1 and "001_a.sql: accepted checksum" in actions[0]
    assert await apply_migrations(empty_db, folder) == 2


async def test_new_file_older_than_applied_version_is_refused_unless_allowed(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_a.sql": "SELECT 1;\n", "003_c.sql": "SELECT 1;\n"})
    await apply_migrations(empty_db, folder)
    write_migrations(folder, {"002_b.sql": "CREATE TABLE late (x int);\n"})

    with pytest.raises(OutOfOrder) as caught:
        await apply_migrations(empty_db, folder)
    assert "002_b.sql" in caught.value.message and "--allow-out-of-order" in caught.value.message
    report = await status(empty_db, MigrationSettings(migrations_dir=folder))
    assert any(p.startswith("gap: 002_b.sql") for p in report.problems)

    assert await apply_migrations(empty_db, folder, allow_out_of_order=True) == 3
    assert await fetchval(empty_db, "SELECT to_regclass('late') IS NOT NULL")


async def test_two_files_with_one_version_are_refused(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_a.sql": "SELECT 1;\n", "1_b.sql": "SELECT 2;\n"})
    with pytest.raises(MigrationFileError, match="two files with version 1"):
        await apply_migrations(empty_db, folder)
    assert await fetchval(empty_db, "SELECT to_regnamespace('schema_service')") is None


async def test_bad_header_directive_and_name_are_refused(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "a", {"001_a.sql": "-- migrate: no-transactions\nSELECT 1;\n"})
    with pytest.raises(MigrationFileError, match="001_a.sql:1: unknown migrate directive"):
        await apply_migrations(empty_db, folder)
    folder = write_migrations(tmp_path / "b", {"first.sql": "SELECT 1;\n"})
    with pytest.raises(MigrationFileError, match="not named <version>_<description>.sql"):
        await apply_migrations(empty_db, folder)


async def test_target_and_dry_run(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {f"00{i}_t{i}.sql": f"CREATE TABLE t{i} (x int);\n" for i in (1, 2, 3)})
    events = await run(empty_db, folder, dry_run=True)
    plan = events[0]
    assert isinstance(plan, PlanReady) and [i.version for i in plan.items] == [1, 2, 3]
    assert all(i.transactional and len(i.checksum) == 64 for i in plan.items)
    assert await fetchval(empty_db, "SELECT to_regnamespace('schema_service')") is None

    assert await apply_migrations(empty_db, folder, target=2) == 2
    assert await fetchval(empty_db, "SELECT to_regclass('t3')") is None
    assert await apply_migrations(empty_db, folder) == 3


async def test_statement_timeout_from_header_overrides_default(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "001_slow.sql": "-- migrate: statement-timeout 2s\nSELECT pg_sleep(0.3);\n",
            "002_default.sql": "SELECT pg_sleep(0.3);\n",
        },
    )
    with pytest.raises(MigrationFailed) as caught:
        await apply_migrations(empty_db, folder, statement_timeout_s=0.1)
    assert caught.value.filename == "002_default.sql" and caught.value.sqlstate == "57014"
    assert await history(empty_db) == [(1, True), (2, False)]


async def test_transactional_file_reports_each_statement(empty_db: str, tmp_path: Path) -> None:
    body = "CREATE TABLE p (x int);\nDO $$ BEGIN PERFORM 1; END $$;\nINSERT INTO p VALUES (1);\n"
    folder = write_migrations(tmp_path, {"001_p.sql": body})

    events = await run(empty_db, folder)

    assert isinstance(events[0], PlanReady) and events[0].items[0].statement_count == 3
    file_events = [e for e in events if isinstance(e, (MigrationStarted, StatementFinished, MigrationFinished))]
    assert isinstance(file_events[0], MigrationStarted) and file_events[0].statement_count == 3
    finished = [(e.version, e.index, e.count, e.resumed) for e in file_events[1:-1] if isinstance(e, StatementFinished)]
    assert finished == [(1, 1, 3, False), (1, 2, 3, False), (1, 3, 3, False)]
    assert isinstance(file_events[-1], MigrationFinished) and len(file_events) == 5
    assert await fetchval(empty_db, "SELECT count(*) FROM p") == 1
