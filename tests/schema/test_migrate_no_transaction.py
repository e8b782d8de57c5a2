"""No-transaction files: split by pglast, journaled, resumed; CONCURRENTLY indexes checked for validity;
lock timeouts retried then reported."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from schema_service.config import MigrationSettings
from schema_service.migrate import apply_migrations
from schema_service.migrate.errors import JournalMismatch, LockRetriesExhausted, MigrationFailed
from schema_service.migrate.events import MigrationStarted, PlanReady, StatementFinished
from schema_service.migrate.ops import repair
from tests.schema.migration_fixtures.helpers import fetch, fetchval, history, run, write_migrations

NO_TX = "-- migrate: no-transaction\n"


async def test_statements_are_split_by_the_parser_and_resume_after_the_last_finished(
    empty_db: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "001_base.sql": "CREATE TABLE items (id int, note text);\n",
            "002_indexes.sql": NO_TX
            + "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_id_idx ON items (id);\n"
            + "-- a comment; with a semicolon\n"
            + "CREATE OR REPLACE FUNCTION semi() RETURNS text LANGUAGE sql AS $$ SELECT 'a;b' $$;\n"
            + "INSERT INTO later (x) VALUES (1) ON CONFLICT DO NOTHING;\n",
        },
    )
    with pytest.raises(MigrationFailed) as caught:
        await apply_migrations(empty_db, folder)
    assert (caught.value.filename, caught.value.line, caught.value.sqlstate) == ("002_indexes.sql", 5, "42P01")
    assert await fetch(empty_db, "SELECT statement_index FROM schema_service.migration_journal ORDER BY 1") == [
        (1,),
        (2,),
    ]
    assert await history(empty_db) == [(1, True), (2, False)]

    await fetchval(empty_db, "CREATE TABLE later (x int PRIMARY KEY)")
    events = await run(empty_db, folder)

    plan = events[0]
    assert isinstance(plan, PlanReady) and plan.items[0].statement_count == 3 and not plan.items[0].transactional
    assert [e for e in events if isinstance(e, MigrationStarted)][0].statement_count == 3
    finished = [(e.index, e.count, e.resumed) for e in events if isinstance(e, StatementFinished)]
    assert finished == [(1, 3, True), (2, 3, True), (3, 3, False)]
    assert await fetchval(empty_db, "SELECT semi()") == "a;b"
    assert await history(empty_db) == [(1, True), (2, True)]
    assert await fetchval(empty_db, "SELECT count(*) FROM schema_service.migration_journal") == 0


async def test_invalid_index_left_by_a_failed_build_is_dropped_and_rebuilt(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "001_t.sql": "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1), (1), (2);\n",
            "002_unique.sql": NO_TX + "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_x_key ON t (x);\n",
        },
    )
    with pytest.raises(MigrationFailed) as caught:
        await apply_migrations(empty_db, folder)
    assert caught.value.sqlstate == "23505"
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('t_x_key')"
    assert await fetchval(empty_db, valid) is False

    await fetchval(empty_db, "DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t WHERE x = 1)")
    assert await apply_migrations(empty_db, folder) == 2
    assert await fetchval(empty_db, valid) is True


async def test_changed_statement_after_partial_run_is_refused_until_repair(empty_db: str, tmp_path: Path) -> None:
    body = "CREATE TABLE IF NOT EXISTS a (x int);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS a_x ON a (x);\n"
    folder = write_migrations(tmp_path, {"001_a.sql": NO_TX + body + "SELECT * FROM nope;\n"})
    with pytest.raises(MigrationFailed):
        await apply_migrations(empty_db, folder)
    (folder / "001_a.sql").write_text(NO_TX + body.replace("(x int)", "(x bigint)") + "SELECT 1;\n")

    with pytest.raises(JournalMismatch, match="statement 1 changed"):
        await apply_migrations(empty_db, folder)
    actions = await repair(empty_db, MigrationSettings(migrations_dir=folder))
    assert any("forgot the statement journal of version 1" in a for a in actions)
    assert await apply_migrations(empty_db, folder) == 1


async def test_lock_timeout_is_retried_then_reported(empty_db: str, tmp_path: Path) -> None:
    await fetchval(empty_db, "CREATE TABLE busy (x int)")
    folder = write_migrations(
        tmp_path, {"001_alter.sql": "CREATE TABLE free (x int);\n\n  ALTER TABLE busy ADD COLUMN y int;\n"}
    )
    holder = await asyncpg.connect(empty_db)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("LOCK TABLE busy IN ACCESS SHARE MODE")
        with pytest.raises(LockRetriesExhausted) as caught:
            await apply_migrations(empty_db, folder, lock_timeout_s=0.02, lock_retries=2, lock_retry_backoff_s=0.01)
        assert "lock not available after 3 attempts" in caught.value.message
        # The blocked statement, not the start of the file: line 3, column 3, statement 2.
        assert (caught.value.filename, caught.value.line, caught.value.column) == ("001_alter.sql", 3, 3)
        assert caught.value.metadata["statement"] == "2"
        assert caught.value.message.startswith("001_alter.sql:3:3: statement 2 (ALTER TABLE busy ADD COLUMN y int)")
        assert caught.value.retry_after_s is not None
        await tx.rollback()
    finally:
        await holder.close()
    assert await apply_migrations(empty_db, folder, lock_timeout_s=0.5) == 1
    assert await fetchval(empty_db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'busy'") == 2


async def test_lock_timeout_in_no_transaction_file_retries_the_statement(empty_db: str, tmp_path: Path) -> None:
    await fetchval(empty_db, "CREATE TABLE busy (x int)")
    folder = write_migrations(tmp_path, {"001_idx.sql": NO_TX + "ALTER TABLE busy ADD COLUMN IF NOT EXISTS y int;\n"})
    holder = await asyncpg.connect(empty_db)
    try:
        await holder.execute("BEGIN; LOCK TABLE busy IN ACCESS SHARE MODE")
        with pytest.raises(LockRetriesExhausted) as caught:
            await apply_migrations(empty_db, folder, lock_timeout_s=0.02, lock_retries=1, lock_retry_backoff_s=0.01)
        assert caught.value.line == 2
    finally:
        await holder.close()
    assert await apply_migrations(empty_db, folder) == 1


# The index key fails while the session sets `test.fail_key`: a REINDEX CONCURRENTLY then dies after
# creating its INVALID `r_x_ccnew` copy, as a killed one would, and the runner's connection is unaffected.
FAILING_KEY = """
CREATE TABLE r (x int);
INSERT INTO r VALUES (1), (2);
CREATE FUNCTION r_key(v int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF current_setting('test.fail_key', true) = 'on' THEN RAISE EXCEPTION 'key failed'; END IF;
    RETURN v;
END $$;
CREATE INDEX r_x ON r (r_key(x));
"""


async def test_reindex_concurrently_drops_an_invalid_ccnew_leftover(empty_db: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(FAILING_KEY)
        await conn.execute("SET test.fail_key = 'on'")
        with pytest.raises(asyncpg.RaiseError, match="key failed"):
            await conn.execute("REINDEX INDEX CONCURRENTLY r_x")
    finally:
        await conn.close()
    leftovers = "SELECT relname, indisvalid FROM pg_index JOIN pg_class ON oid = indexrelid WHERE relname LIKE 'r\\_x%'"
    assert sorted(map(tuple, await fetch(empty_db, leftovers))) == [("r_x", True), ("r_x_ccnew", False)]

    folder = write_migrations(tmp_path, {"001_r.sql": NO_TX + "REINDEX INDEX CONCURRENTLY r_x;\n"})
    assert await apply_migrations(empty_db, folder) == 1

    assert [tuple(row) for row in await fetch(empty_db, leftovers)] == [("r_x", True)]
