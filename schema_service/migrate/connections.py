"""Connections the engine opens, each labelled with an `application_name` of its own.

Work connections are named `schema-service-migrate <host>:<pid>`: after a crash, the next
runner (holding the lock, so no live runner can own them) finds and terminates backends the
dead one left working. The lock connection has another prefix so waiting replicas are never hit.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from schema_service.migrate.history import runner_identity

WORK_APP = "schema-service-migrate"
LOCK_APP = "schema-service-migrate-lock"
# The journal of no-transaction files; like the lock connection, never taken for a dead runner's.
BOOK_APP = "schema-service-migrate-journal"
CONNECT_TIMEOUT_S = 10.0


async def connect(dsn: str, prefix: str = WORK_APP) -> asyncpg.Connection:
    # application_name is cut at 63 bytes by the server; the prefix comes first so it survives.
    name = f"{prefix} {runner_identity()}"[:63]
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn, timeout=CONNECT_TIMEOUT_S, server_settings={"application_name": name}
    )
    return conn


async def set_timeouts(conn: asyncpg.Connection, *, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
    """Session settings; every file gets a fresh connection, so nothing leaks into the next file."""
    await conn.execute(
        "SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $2, false)",
        f"{statement_timeout_ms}ms",
        f"{lock_timeout_ms}ms",
    )


# What a migration may have changed in its session that must not reach the runner's own bookkeeping:
# role and session user (RESET ALL leaves both alone), then every other setting (search_path,
# statement_timeout, SET LOCAL ...), after which the runner's timeouts are set again.
_RESET_SESSION = "RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL"


async def restore_session(conn: asyncpg.Connection, *, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
    """Undo a migration's SET ROLE / SET SESSION AUTHORIZATION / SET [LOCAL] before bookkeeping on its
    connection (inside the file's transaction, so the history row still commits with the file)."""
    await conn.execute(_RESET_SESSION)
    await set_timeouts(conn, statement_timeout_ms=statement_timeout_ms, lock_timeout_ms=lock_timeout_ms)


async def terminate_orphans(conn: asyncpg.Connection, *, wait_s: float = 10.0) -> list[int]:
    """Terminate work backends of a dead runner in this database; the caller holds the migration lock."""
    query = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE $1 AND pid <> pg_backend_pid()"
    )
    pids: list[int] = [row["pid"] for row in await conn.fetch(query, WORK_APP + " %")]
    for pid in pids:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    deadline = time.monotonic() + wait_s
    # Termination is asynchronous; a backend that holds locks must be gone before we resume.
    while pids and time.monotonic() < deadline:
        alive = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids)
        if not alive:
            break
        await asyncio.sleep(0.02)
    return pids
