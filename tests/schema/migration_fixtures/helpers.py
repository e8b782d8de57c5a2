"""Helpers for the migration tests: write migration folders, read the catalog, wait on pg_stat_activity."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from schema_service.migrate import RunOptions, migrate
from schema_service.migrate.events import Event
from tests.pg import dsn_with_user

FIXTURES = Path(__file__).resolve().parent


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    """Write `{"001_a.sql": sql, ...}` into `directory` (created) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def run(dsn: str, directory: Path, **options: Any) -> list[Event]:
    """All events of one run (raises what the run raises)."""
    return [event async for event in migrate(dsn, RunOptions.build(directory, **options))]


async def fetchval(dsn: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def history(dsn: str) -> list[tuple[int, bool]]:
    rows = await fetch(dsn, "SELECT version, success FROM schema_service.migration_history ORDER BY version")
    return [(row["version"], row["success"]) for row in rows]


async def wait_for_lock_wait(dsn: str, *, app_prefix: str = "schema-service-migrate ", timeout_s: float = 20.0) -> int:
    """Poll pg_stat_activity until a migration backend is blocked on a heavyweight lock; its pid.

    The backend's state lives in the server; there is nothing to await but the catalog itself.
    """
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(dsn)
    try:
        while time.monotonic() < deadline:
            pid = await conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE $1 AND wait_event_type = 'Lock'",
                app_prefix + "%",
            )
            if pid is not None:
                return int(pid)
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    raise AssertionError("no migration backend started waiting on a lock")


async def wait_until_gone(dsn: str, pid: int, *, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not await fetchval(dsn, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"backend {pid} still alive")


# Verify's scratch-server tests need a live role that may read the history but not create databases.
READ_HISTORY = (
    "GRANT USAGE ON SCHEMA schema_service TO {role}",
    "GRANT SELECT ON ALL TABLES IN SCHEMA schema_service TO {role}",
)


@asynccontextmanager
async def restricted_role(dsn: str, *grants: str) -> AsyncIterator[str]:
    """A login role that may not create databases (nor anything else unless granted); its DSN."""
    role = f"r_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
        for grant in grants:
            await admin.execute(grant.format(role=role))
        yield dsn_with_user(dsn, role)
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
