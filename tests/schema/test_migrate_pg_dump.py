"""pg_dump output as a migration (Rails' and Django's structure.sql, data dumps): `\\restrict` and
`\\unrestrict` are skipped, `COPY ... FROM stdin` rows go through the COPY protocol, any other psql
meta-command is refused by name before anything runs."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from schema_service.migrate import apply_migrations
from schema_service.migrate.errors import MigrationFailed, MigrationFileError
from schema_service.migrate.files import read_file
from schema_service.migrate.lint import lint_dir
from schema_service.migrate.statements import parse
from tests.schema.migration_fixtures.helpers import fetch, fetchval, history, write_migrations

DUMP = """--
-- PostgreSQL database dump
--

\\restrict 4bY0xLq2TmNvCk8rSe

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SELECT pg_catalog.set_config('search_path', '', false);

CREATE TABLE public.people (
    id integer NOT NULL,
    name text,
    note text
);

CREATE FUNCTION public.two_lines() RETURNS text LANGUAGE sql AS $$ SELECT 'first
\\second'::text $$;

COPY public.people (id, name, note) FROM stdin;
1\talice\t\\N
2\tbob; the builder\tsays "hi"
3\t\\N\ttab\\there
\\.

ALTER TABLE ONLY public.people ADD CONSTRAINT people_pkey PRIMARY KEY (id);

\\unrestrict 4bY0xLq2TmNvCk8rSe
"""


async def test_a_pg_dump_script_applies_with_its_rows(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_structure.sql": DUMP})

    assert await apply_migrations(empty_db, folder) == 1

    rows = await fetch(empty_db, "SELECT id, name, note FROM public.people ORDER BY id")
    assert [tuple(r) for r in rows] == [
        (1, "alice", None),
        (2, "bob; the builder", 'says "hi"'),
        (3, None, "tab\there"),
    ]
    assert await fetchval(empty_db, "SELECT public.two_lines()") == "first\n\\second"
    assert await history(empty_db) == [(1, True)]


def test_meta_commands_are_found_between_statements_only(tmp_path: Path) -> None:
    file = read_file(write_migrations(tmp_path, {"001_structure.sql": DUMP}) / "001_structure.sql")

    statements = parse(file)

    copies = [s for s in statements if s.copy_data is not None]
    assert len(statements) == 7 and len(copies) == 1
    assert copies[0].copy_data == '1\talice\t\\N\n2\tbob; the builder\tsays "hi"\n3\t\\N\ttab\\there\n'
    assert "\\second" in statements[4].text  # the backslash line inside the function body stays in it


@pytest.mark.parametrize("command", ["\\connect other", "\\i setup.sql", "\\set ON_ERROR_STOP on"])
async def test_other_meta_commands_are_refused_by_name(empty_db: str, tmp_path: Path, command: str) -> None:
    folder = write_migrations(
        tmp_path, {"001_a.sql": f"CREATE TABLE a (id int);\n{command}\nCREATE TABLE b (id int);\n"}
    )

    name = command.split()[0]
    with pytest.raises(MigrationFileError, match=rf"001_a.sql:2:1: psql meta-command \{name} is not supported"):
        await apply_migrations(empty_db, folder)
    assert await fetchval(empty_db, "SELECT to_regclass('public.a')") is None


async def test_a_bad_row_is_reported_at_its_line(empty_db: str, tmp_path: Path) -> None:
    sql = "CREATE TABLE n (id int);\nCOPY n (id) FROM stdin;\n1\n2\nthree\n\\.\n"
    folder = write_migrations(tmp_path, {"001_a.sql": sql})

    with pytest.raises(MigrationFailed, match=r"001_a.sql:5:1: 22P02"):
        await apply_migrations(empty_db, folder)
    assert await fetchval(empty_db, "SELECT to_regclass('public.n')") is None


async def test_copy_rows_without_their_end_line_are_refused(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_a.sql": "CREATE TABLE n (id int);\nCOPY n FROM stdin;\n1\n"})
    with pytest.raises(MigrationFileError, match=r"001_a.sql:2:1: COPY ... FROM stdin without the `\\\.` line"):
        parse(read_file(folder / "001_a.sql"))


async def pg_dump_for(dsn: str) -> str:
    """A pg_dump at least as new as the server (pg_dump refuses newer servers): PATH's, else the embedded
    PostgreSQL's (the pgserver wheel ships one, for when the tests run on it)."""
    server_major = int(await fetchval(dsn, "SELECT current_setting('server_version_num')::int / 10000"))
    spec = importlib.util.find_spec("pgserver")  # located, not imported (its import warns about run dirs)
    embedded = Path(spec.origin).parent / "pginstall" / "bin" / "pg_dump" if spec and spec.origin else None
    candidates = [shutil.which("pg_dump"), str(embedded) if embedded else None]
    for binary in filter(None, candidates):
        if not Path(binary).exists():
            continue
        version = await asyncio.create_subprocess_exec(binary, "--version", stdout=asyncio.subprocess.PIPE)
        out, _ = await version.communicate()
        if int(re.search(rb"(\d+)\.", out).group(1)) >= server_major:  # type: ignore[union-attr]
            return binary
    pytest.skip(f"no pg_dump for PostgreSQL {server_major}")


async def test_real_pg_dump_output_applies(empty_db: str, migrated_db: str, tmp_path: Path) -> None:
    await fetchval(migrated_db, "INSERT INTO users (email) VALUES ('a@example.com'), ('b@example.com')")
    pg_dump = await pg_dump_for(migrated_db)
    proc = await asyncio.create_subprocess_exec(
        pg_dump,
        "--no-owner",
        "--no-privileges",
        "--exclude-schema",
        "schema_service",
        "--dbname",
        migrated_db,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    folder = write_migrations(tmp_path, {"001_structure.sql": out.decode()})

    assert await apply_migrations(empty_db, folder) == 1

    assert await fetchval(empty_db, "SELECT string_agg(email, ',' ORDER BY email) FROM public.users") == (
        "a@example.com,b@example.com"
    )


async def test_lint_reads_a_pg_dump_script_as_sql(tmp_path: Path) -> None:
    findings = await lint_dir(write_migrations(tmp_path, {"001_structure.sql": DUMP}))

    assert not [f for f in findings if f.rule in ("invalid-file", "squawk:syntax-error")], [str(f) for f in findings]
