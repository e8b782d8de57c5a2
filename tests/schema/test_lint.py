"""lint: Squawk plus our rules; each rule fires on a bad fixture, and the project's own migrations pass."""

from __future__ import annotations

from pathlib import Path

from schema_service.config import PACKAGE_MIGRATIONS
from schema_service.migrate.lint import Finding, lint_dir
from tests.schema.migration_fixtures.helpers import FIXTURES, write_migrations


def _at(findings: list[Finding], file: str) -> set[tuple[int, str]]:
    return {(f.line, f.rule) for f in findings if f.file == file}


async def test_project_migrations_pass() -> None:
    findings = await lint_dir(PACKAGE_MIGRATIONS)
    assert findings == [], "\n".join(map(str, findings))


async def test_each_rule_fires_on_its_fixture() -> None:
    findings = await lint_dir(FIXTURES / "lint_bad")

    assert {(1, "transaction-control"), (3, "transaction-control")} <= _at(findings, "001_transaction_control.sql")
    assert (2, "non-transactional-statement") in _at(findings, "002_concurrently_in_transaction.sql")
    not_rerunnable = {
        line for line, rule in _at(findings, "003_not_rerunnable.sql") if rule == "no-transaction-not-rerunnable"
    }
    # 7: ADD VALUE without IF NOT EXISTS, 8: RENAME VALUE; 9 (ADD VALUE IF NOT EXISTS) runs twice safely.
    assert not_rerunnable == {2, 3, 4, 5, 7, 8}
    assumes = {
        line
        for line, rule in _at(findings, "004_if_not_exists_assumes_columns.sql")
        if rule == "if-not-exists-assumes-columns"
    }
    # The index, COMMENT ON COLUMN and COMMENT ON CONSTRAINT rely on the table's definition; COMMENT ON TABLE does not.
    assert assumes == {2, 3, 4}
    assert (2, "invalid-file") in _at(findings, "005_syntax_error.sql")
    assert all(f.severity == "error" for f in findings if not f.rule.startswith("squawk:"))


async def test_squawk_findings_are_reported_with_its_rule_names() -> None:
    findings = await lint_dir(FIXTURES / "lint_bad")
    squawk = [f for f in findings if f.rule.startswith("squawk:")]
    assert ("squawk:prefer-robust-stmts", "003_not_rerunnable.sql") in {(f.rule, f.file) for f in squawk}
    assert all(f.line >= 1 and f.column >= 1 for f in squawk)


async def test_if_not_exists_alone_and_guarded_column_adds_are_fine(tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "001_a.sql": "CREATE TABLE IF NOT EXISTS audit (id bigint PRIMARY KEY);\n"
            "ALTER TABLE audit ADD COLUMN IF NOT EXISTS note text;\n",
            "002_b.sql": "-- migrate: no-transaction\nVACUUM (ANALYZE) audit;\n"
            "DROP INDEX CONCURRENTLY IF EXISTS audit_old_idx;\n",
        },
    )
    findings = await lint_dir(folder)
    assert [f for f in findings if not f.rule.startswith("squawk:")] == []


def test_finding_reads_like_a_compiler_message() -> None:
    finding = Finding("001_a.sql", 3, 5, "transaction-control", "remove it", "error")
    assert str(finding) == "001_a.sql:3:5: error: [transaction-control] remove it"


async def test_commit_inside_a_do_block_of_a_transactional_file_is_flagged_at_its_line(tmp_path: Path) -> None:
    do_block = "DO $$\nBEGIN\n  CREATE TABLE t (id int);\n  IF true THEN\n    COMMIT;\n  END IF;\nEND $$;\n"
    folder = write_migrations(
        tmp_path,
        {"001_a.sql": "CREATE TABLE s (id int);\n" + do_block, "002_b.sql": "-- migrate: no-transaction\n" + do_block},
    )
    findings = await lint_dir(folder)

    assert (6, "transaction-control") in _at(findings, "001_a.sql")
    assert "transaction-control" not in {rule for _, rule in _at(findings, "002_b.sql")}


async def test_rls_switches_and_column_free_triggers_assume_no_columns(tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "001_a.sql": "CREATE TABLE IF NOT EXISTS notes (id bigint PRIMARY KEY, body text);\n"
            "ALTER TABLE notes ENABLE ROW LEVEL SECURITY;\n"
            "ALTER TABLE notes FORCE ROW LEVEL SECURITY;\n"
            "CREATE OR REPLACE TRIGGER notes_touch BEFORE UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION f();\n"
            "CREATE OR REPLACE TRIGGER notes_body BEFORE UPDATE OF body ON notes FOR EACH ROW EXECUTE FUNCTION f();\n",
        },
    )
    findings = await lint_dir(folder)

    # Only the trigger that names a column (UPDATE OF body) relies on the table's columns.
    assert {line for line, rule in _at(findings, "001_a.sql") if rule == "if-not-exists-assumes-columns"} == {5}
