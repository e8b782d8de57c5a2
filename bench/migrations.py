"""Benchmark: the full schema on an empty database, a no-op rerun, and the per-file overhead over many small
files, against baselines run beside them.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/migrations.py [--rounds 5]

Baselines measured in the same run, on the same server and files:
  full   `psql -X -q -1 -f FILE` per file (no-transaction files without -1), and a bare asyncpg
         connection executing each file, with no lock, history, parsing or checks
  no-op  a bare asyncpg connect + one SELECT of the history + close (the least a "nothing to do" check costs)
  files  --small-files generated files of two small statements each: one `psql -X -q -1 -f F1 -f F2 ...`
         over all of them (one connection, one transaction), and a bare asyncpg connection running each
         file in a transaction of its own (what per-file atomicity costs at least)
Targets: full <= 1 s, no-op <= 100 ms, small files <= 1.5x psql -1. Medians of --rounds fresh databases.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from bench.results import target
from schema_service.config import PACKAGE_MIGRATIONS
from schema_service.database import with_database
from schema_service.migrate import apply_migrations
from schema_service.migrate.files import load_dir
from schema_service.migrate.statements import parse


async def fresh_db(admin: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await conn.close()
    return name


async def drop_db(admin: str, name: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def timed(admin: str, work: Callable[[str], Awaitable[object]], *, prepare: bool = False) -> float:
    """Seconds `work(dsn)` takes on a fresh database (migrated first when `prepare`)."""
    name = await fresh_db(admin)
    dsn = with_database(admin, name)
    try:
        if prepare:
            await apply_migrations(dsn)
        started = time.perf_counter()
        await work(dsn)
        return time.perf_counter() - started
    finally:
        await drop_db(admin, name)


async def psql_files(dsn: str) -> None:
    for file in load_dir(PACKAGE_MIGRATIONS):
        args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(file.path)]
        if file.transactional:
            args.insert(1, "-1")
        await asyncio.to_thread(subprocess.run, args, check=True, stdout=subprocess.DEVNULL)


async def bare_asyncpg(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for file in load_dir(PACKAGE_MIGRATIONS):
            if file.transactional:
                async with conn.transaction():
                    await conn.execute(file.sql)
            else:
                for statement in parse(file):
                    await conn.execute(statement.text)
    finally:
        await conn.close()


async def bare_check(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.fetchval("SELECT max(version) FROM schema_service.migration_history")
    finally:
        await conn.close()


def small_files(folder: Path, count: int) -> Path:
    """`count` migration files of two small statements each, as a long-lived project accumulates them."""
    for i in range(1, count + 1):
        sql = f"CREATE TABLE t{i} (id bigint PRIMARY KEY, note text);\nCOMMENT ON TABLE t{i} IS 'file {i}';\n"
        (folder / f"{i:04d}_t{i}.sql").write_text(sql)
    return folder


def psql_one_transaction(folder: Path) -> Callable[[str], Awaitable[object]]:
    async def work(dsn: str) -> None:
        files = [arg for path in sorted(folder.glob("*.sql")) for arg in ("-f", str(path))]
        args = ["psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", dsn, *files]
        await asyncio.to_thread(subprocess.run, args, check=True, stdout=subprocess.DEVNULL)

    return work


def bare_per_file(folder: Path) -> Callable[[str], Awaitable[object]]:
    async def work(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for path in sorted(folder.glob("*.sql")):
                async with conn.transaction():
                    await conn.execute(path.read_text())
        finally:
            await conn.close()

    return work


def ours_dir(folder: Path) -> Callable[[str], Awaitable[object]]:
    async def work(dsn: str) -> None:
        await apply_migrations(dsn, folder)

    return work


async def per_file(rounds: int, admin: str, count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-files-") as scratch:
        folder = small_files(Path(scratch), count)
        ours = await median(rounds, admin, ours_dir(folder))
        bare = await median(rounds, admin, bare_per_file(folder))
        print(f"{count} small files  schema-service {ours * 1000:8.1f} ms   {ours / count * 1000:6.2f} ms a file")
        print(f"              bare, txn/file {bare * 1000:8.1f} ms   ratio {ours / bare:5.2f}x")
        if shutil.which("psql"):
            psql = await median(rounds, admin, psql_one_transaction(folder))
            print(
                f"              psql -1 (all)  {psql * 1000:8.1f} ms   ratio {ours / psql:5.2f}x, "
                f"overhead {(ours - psql) / count * 1000:5.2f} ms a file"
            )
            target(f"{count} small files: schema-service / psql -1", ours / psql, at_most=1.5, unit="x")


async def median(rounds: int, admin: str, work: Callable[[str], Awaitable[object]], *, prepare: bool = False) -> float:
    return statistics.median([await timed(admin, work, prepare=prepare) for _ in range(rounds)])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--small-files", type=int, default=100, help="files in the per-file overhead run")
    args = parser.parse_args()
    admin = with_database(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"), "postgres")
    await timed(admin, apply_migrations)  # warm caches and imports

    ours_full = await median(args.rounds, admin, apply_migrations)
    bare_full = await median(args.rounds, admin, bare_asyncpg)
    ours_noop = await median(args.rounds, admin, apply_migrations, prepare=True)
    bare_noop = await median(args.rounds, admin, bare_check, prepare=True)
    files = len(load_dir(PACKAGE_MIGRATIONS))
    print(f"{files} migration files, median of {args.rounds} fresh databases")
    print(f"full schema   schema-service {ours_full * 1000:8.1f} ms")
    print(f"              bare asyncpg   {bare_full * 1000:8.1f} ms   ratio {ours_full / bare_full:5.2f}x")
    if shutil.which("psql"):
        psql_full = await median(args.rounds, admin, psql_files)
        print(f"              psql -1 -f     {psql_full * 1000:8.1f} ms   ratio {ours_full / psql_full:5.2f}x")
    print(f"no-op rerun   schema-service {ours_noop * 1000:8.1f} ms")
    print(f"              bare check     {bare_noop * 1000:8.1f} ms   ratio {ours_noop / bare_noop:5.2f}x")
    target("full schema, fresh database", ours_full * 1000, at_most=1000, unit=" ms")
    target("no-op rerun", ours_noop * 1000, at_most=100, unit=" ms")
    await per_file(args.rounds, admin, args.small_files)


if __name__ == "__main__":
    asyncio.run(main())
