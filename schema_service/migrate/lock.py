"""The migration lock: a session-level PostgreSQL advisory lock on a dedicated connection.

It is taken by polling `pg_try_advisory_lock`, never by blocking in `pg_advisory_lock`: a
replica blocked in the lock queue would make a `CREATE INDEX CONCURRENTLY` of the holder wait
for it (the build waits for every transaction that could see the table), a deadlock. The lock
dies with its connection, so a killed runner never leaves it held.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from schema_service.migrate.connections import LOCK_APP, connect

# One 64-bit key per database; pg_locks shows it as classid (high half) and objid (low half).
LOCK_KEY = 0x5343_4845_4D41  # "SCHEMA"
_CLASSID, _OBJID = LOCK_KEY >> 32, LOCK_KEY & 0xFFFF_FFFF


@dataclass(frozen=True)
class LockHolder:
    backend_pid: int
    application_name: str
    client_addr: str
    since: datetime | None


async def current_holder(conn: asyncpg.Connection) -> LockHolder | None:
    """Who holds the migration lock in this connection's database, if anyone."""
    row = await conn.fetchrow(
        """SELECT a.pid, a.application_name, coalesce(host(a.client_addr), 'local') AS addr, a.backend_start
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = $1 AND l.objid = $2
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        _CLASSID,
        _OBJID,
    )
    if row is None:
        return None
    return LockHolder(row["pid"], row["application_name"] or "", row["addr"], row["backend_start"])


class MigrationLock:
    """Holds the dedicated connection; `close()` releases the lock with it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, dsn: str) -> MigrationLock:
        return cls(await connect(dsn, LOCK_APP))

    async def try_acquire(self) -> bool:
        return bool(await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY))

    async def holder(self) -> LockHolder | None:
        return await current_holder(self.conn)

    async def close(self) -> None:
        if not self.conn.is_closed():
            await self.conn.close()
