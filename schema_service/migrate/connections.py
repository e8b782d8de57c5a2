"""Connections the engine opens, each labelled with an `application_name` of its own.

Work connections are named `schema-service-migrate <host>:<pid>`: after a crash, the next
runner (holding the lock, so no live runner can own them) finds and terminates backends the
dead one left working. The lock connection has another prefix so waiting replicas are never hit.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from schema_service.database import session_attrs
from schema_service.migrate.history import runner_identity

WORK_APP = "schema-service-migrate"
LOCK_APP = "schema-service-migrate-lock"
CONNECT_TIMEOUT_S = 10.0


async def connect(dsn: str, prefix: str = WORK_APP, *, statement_cache_size: int = 100) -> asyncpg.Connection:
    # application_name is cut at 63 bytes by the server; the prefix comes first so it survives.
    name = f"{prefix} {runner_identity()}"[:63]
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn,
        timeout=CONNECT_TIMEOUT_S,
        server_settings={"application_name": name},
        statement_cache_size=statement_cache_size,
        # Of a multi-host URL's servers, the primary: migrations write (see database.session_attrs).
        target_session_attrs=session_attrs(dsn),
    )
    return conn


class WorkConnection:
    """The run's connection for the files' statements, reused from file to file: a new backend per file
    costs more than a small file does (25 ms under load against about 1 ms of statements).

    Before each file but the first the session is reset with DISCARD ALL, so nothing a file did to its
    session reaches the next (SET, SET ROLE, SESSION AUTHORIZATION, temporary tables, PREPARE, LISTEN,
    advisory locks); it also drops prepared statements, so this connection keeps no statement cache.
    After a failure or a cancellation the connection is closed instead (it may be mid-query); the next
    file opens another.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._used = False
        # False for all but a run's last file: see restore_session.
        self.durable = True

    async def acquire(self, *, statement_timeout_ms: int, lock_timeout_ms: int) -> asyncpg.Connection:
        """The connection, its session as a new connection's, with the file's timeouts."""
        if self._conn is None or self._conn.is_closed():
            self._conn, self._used = await connect(self.dsn, statement_cache_size=0), False
        if self._used:
            await self._conn.execute("DISCARD ALL")  # alone: it cannot run in a multi-statement query
        await self._conn.execute(_timeouts(statement_timeout_ms, lock_timeout_ms))
        self._used = True
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()


def _timeouts(statement_timeout_ms: int, lock_timeout_ms: int) -> str:
    return f"SET statement_timeout = '{int(statement_timeout_ms)}ms'; SET lock_timeout = '{int(lock_timeout_ms)}ms'"


async def set_timeouts(conn: asyncpg.Connection, *, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
    """Session settings of one file (the work connection is reset between files)."""
    await conn.execute(_timeouts(statement_timeout_ms, lock_timeout_ms))


# What a migration may have changed in its session that must not reach the runner's own bookkeeping:
# role and session user (RESET ALL leaves both alone), then every other setting (search_path,
# statement_timeout, SET LOCAL ...), after which the runner's timeouts are set again.
_RESET_SESSION = "RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL"


async def restore_session(
    conn: asyncpg.Connection, *, statement_timeout_ms: int, lock_timeout_ms: int, durable: bool = True
) -> None:
    """Undo a migration's SET ROLE / SET SESSION AUTHORIZATION / SET [LOCAL] before bookkeeping on its
    connection (inside the file's transaction, so the history row still commits with the file)."""
    # Not durable: the commit does not wait for its WAL flush. The run's last file commits durably, and
    # WAL is flushed in order, so every file of the run is durable once the run reports done.
    later = "" if durable else "; SET LOCAL synchronous_commit = off"
    await conn.execute(f"{_RESET_SESSION}; {_timeouts(statement_timeout_ms, lock_timeout_ms)}{later}")


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
