"""Benchmark: the full schema on an empty database, and a no-op rerun, against baselines run beside them.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/migrations.py [--rounds 5]

Baselines measured in the same run, on the same server and files:
  full   `psql -X -q -1 -f FILE` per file (no-transaction files without -1), and a bare asyncpg
         connection executing each file, with no lock, history, parsing or checks
  no-op  a bare asyncpg connect + one SELECT of the history + close (the least a "nothing to do" check costs)
Targets: full <= 1 s, no-op <= 100 ms. Medians of --rounds fresh databases.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

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


async def median(rounds: int, admin: str, work: Callable[[str], Awaitable[object]], *, prepare: bool = False) -> float:
    return statistics.median([await timed(admin, work, prepare=prepare) for _ in range(rounds)])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    admin = with_database(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"), "postgres")
    await timed(admin, apply_migrations)  # warm caches and imports

    ours_full = await median(args.rounds, admin, apply_migrations)
    bare_full = await median(args.rounds, admin, bare_asyncpg)
    ours_noop = await median(args.rounds, admin, apply_migrations, prepare=True)
    bare_noop = await median(args.rounds, admin, bare_check, prepare=True)
    files = len(load_dir(PACKAGE_MIGRATIONS))
    print(f"{files} migration files, median of {args.rounds} fresh databases")
    print(f"full schema   schema-service {ours_full * 1000:8.1f} ms   (target <= 1000 ms)")
    print(f"              bare asyncpg   {bare_full * 1000:8.1f} ms   ratio {ours_full / bare_full:5.2f}x")
    if shutil.which("psql"):
        psql_full = await median(args.rounds, admin, psql_files)
        print(f"              psql -1 -f     {psql_full * 1000:8.1f} ms   ratio {ours_full / psql_full:5.2f}x")
    print(f"no-op rerun   schema-service {ours_noop * 1000:8.1f} ms   (target <= 100 ms)")
    print(f"              bare check     {bare_noop * 1000:8.1f} ms   ratio {ours_noop / bare_noop:5.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
