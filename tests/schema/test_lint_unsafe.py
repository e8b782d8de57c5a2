"""lint and migrate refuse SQL that reaches outside the database unless the file's header names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from schema_service.migrate.errors import MigrationFileError
from schema_service.migrate.files import read_file
from schema_service.migrate.lint import Finding, lint_dir, lint_file
from schema_service.migrate.unsafe import MAX_DEPTH, UNSAFE_KINDS
from tests.schema.migration_fixtures.helpers import write_migrations

# (kind, SQL): each form the parser must see, top level and inside bodies.
UNSAFE = [
    ("copy-program", "COPY (SELECT 1) TO PROGRAM 'id';"),
    ("copy-program", "COPY t FROM PROGRAM 'id';"),
    ("server-files", "COPY t FROM '/etc/passwd';"),
    ("server-files", "SELECT pg_read_file('/etc/passwd');"),
    ("server-files", "SELECT pg_catalog.pg_read_binary_file('/etc/passwd');"),
    ("server-files", "SELECT * FROM pg_ls_dir('.');"),
    ("large-object-files", "SELECT lo_import('/etc/passwd');"),
    ("large-object-files", "SELECT lo_export(1, '/tmp/x');"),
    ("alter-system", "ALTER SYSTEM SET work_mem = '1MB';"),
    ("server-files", "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT pg_read_file('/etc/passwd') $$;"),
    ("large-object-files", "CREATE FUNCTION f() RETURNS oid LANGUAGE sql RETURN lo_import('/etc/passwd');"),
    ("copy-program", "DO $$ BEGIN COPY (SELECT 1) TO PROGRAM 'id'; END $$;"),
    ("server-files", "DO $$ BEGIN PERFORM pg_read_file('/etc/passwd'); END $$;"),
    ("server-files", "DO $$ DECLARE x text; BEGIN x := pg_read_file('/etc/passwd'); END $$;"),
    ("large-object-files", "DO $$ BEGIN IF lo_export(1, '/tmp/x') = 1 THEN NULL; END IF; END $$;"),
    (
        "server-files",
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_ls_dir('.'); END $$;",
    ),
    ("copy-program", "DO $a$ BEGIN DO $b$ BEGIN COPY (SELECT 1) TO PROGRAM 'id'; END $b$; END $a$;"),
    (
        "server-files",
        "DO $a$ BEGIN CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $b$ BEGIN RETURN pg_read_file('/x'); "
        "END $b$; END $a$;",
    ),
]

# Look-alikes that reach nothing: a string, a table and a column named like the functions, COPY FROM stdin.
HARMLESS = [
    "SELECT 'pg_read_file(''/etc/passwd'')';",
    "CREATE TABLE pg_read_file (lo_import int);",
    "COPY t (a) FROM stdin;\n1\n\\.\n",
    "SET work_mem = '1MB';",
    "DO $$ BEGIN RAISE NOTICE 'COPY t TO PROGRAM ''id'''; END $$;",
]


def _findings(tmp_path: Path, sql: str) -> list[Finding]:
    folder = write_migrations(tmp_path, {"001_x.sql": sql})
    return [f for f in lint_file(read_file(folder / "001_x.sql")) if f.rule == "unsafe-sql"]


@pytest.mark.parametrize(("kind", "sql"), UNSAFE)
def test_each_unsafe_form_is_an_error_naming_its_override(tmp_path: Path, kind: str, sql: str) -> None:
    findings = _findings(tmp_path, f"-- a migration\n{sql}\n")

    assert [(f.line, f.severity) for f in findings] == [(2, "error")]
    assert f"`-- migrate: allow-unsafe {kind}`" in findings[0].message


@pytest.mark.parametrize(("kind", "sql"), UNSAFE)
def test_the_named_override_turns_it_into_a_warning(tmp_path: Path, kind: str, sql: str) -> None:
    findings = _findings(tmp_path, f"-- migrate: allow-unsafe {kind}\n{sql}\n")

    assert [(f.severity, f.rule) for f in findings] == [("warning", "unsafe-sql")]


@pytest.mark.parametrize(("kind", "sql"), UNSAFE[:4])
def test_an_override_for_another_kind_does_not_allow_it(tmp_path: Path, kind: str, sql: str) -> None:
    other = "alter-system" if kind != "alter-system" else "copy-program"
    findings = _findings(tmp_path, f"-- migrate: allow-unsafe {other}\n{sql}\n")

    assert [f.severity for f in findings] == ["error"]


@pytest.mark.parametrize("sql", HARMLESS)
def test_look_alikes_are_not_flagged(tmp_path: Path, sql: str) -> None:
    assert _findings(tmp_path, sql) == []


@pytest.mark.parametrize("value", ["", " all", " copy_program", " *"])
def test_the_override_names_one_known_kind(tmp_path: Path, value: str) -> None:
    folder = write_migrations(tmp_path, {"001_x.sql": f"-- migrate: allow-unsafe{value}\nSELECT 1;\n"})

    with pytest.raises(MigrationFileError, match="allow-unsafe needs one of copy-program, server-files"):
        read_file(folder / "001_x.sql")


async def test_lint_dir_reports_it_with_the_other_rules(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_x.sql": "COPY (SELECT 1) TO PROGRAM 'id';\n"})

    findings = await lint_dir(folder)

    assert ("001_x.sql", 1, "unsafe-sql", "error") in {(f.file, f.line, f.rule, f.severity) for f in findings}


def _nested(depth: int) -> str:
    sql = "COPY (SELECT 1) TO PROGRAM 'id';"
    for level in range(depth):
        sql = f"DO $l{level}$ BEGIN {sql} END $l{level}$;"
    return sql


def test_bodies_nested_too_deep_to_check_are_refused_whatever_the_header_allows(tmp_path: Path) -> None:
    header = "".join(f"-- migrate: allow-unsafe {kind}\n" for kind in UNSAFE_KINDS)

    assert [f.severity for f in _findings(tmp_path / "ok", header + _nested(MAX_DEPTH) + "\n")] == ["warning"]
    too_deep = _findings(tmp_path / "deep", header + _nested(MAX_DEPTH + 1) + "\n")
    assert [f.severity for f in too_deep] == ["error"]
    assert "nested more than 8 deep" in too_deep[0].message
