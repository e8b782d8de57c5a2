"""The history table and the statement journal, in schema `schema_service` (kept out of `verify`).

A version's row is written in the same transaction as a transactional file's statements, so a
file is either applied and recorded or neither. Failures are recorded (success = false) in a
transaction of their own after the rollback; such a version stays pending.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime

import asyncpg

SCHEMA = "schema_service"
NOTIFY_CHANNEL = "schema_service_migrations"

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.migration_history (
    version        bigint PRIMARY KEY,
    name           text        NOT NULL,
    checksum       text        NOT NULL,
    transactional  boolean     NOT NULL,
    applied_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    execution_ms   bigint      NOT NULL,
    applied_by     text        NOT NULL,
    success        boolean     NOT NULL,
    error          text
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.migration_journal (
    version            bigint      NOT NULL,
    statement_index    integer     NOT NULL,
    statement_checksum text        NOT NULL,
    finished_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    execution_ms       bigint      NOT NULL,
    PRIMARY KEY (version, statement_index)
);
"""


@dataclass(frozen=True)
class HistoryRow:
    version: int
    name: str
    checksum: str
    transactional: bool
    applied_at: datetime
    execution_ms: int
    applied_by: str
    success: bool
    error: str | None


def runner_identity() -> str:
    """Who applies: the pod (HOSTNAME in Kubernetes) or host, and the process id."""
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}:{os.getpid()}"


async def ensure_tables(conn: asyncpg.Connection) -> None:
    """Create the history tables; called under the migration lock so replicas never race on it."""
    await conn.execute(DDL)


async def exists(conn: asyncpg.Connection) -> bool:
    found = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{SCHEMA}.migration_history")
    return bool(found)


async def read(conn: asyncpg.Connection) -> list[HistoryRow]:
    """All rows, oldest version first; empty when the table does not exist yet."""
    if not await exists(conn):
        return []
    rows = await conn.fetch(
        f"SELECT version, name, checksum, transactional, applied_at, execution_ms, applied_by, success, error "
        f"FROM {SCHEMA}.migration_history ORDER BY version"
    )
    return [HistoryRow(**dict(row)) for row in rows]


def current_version(rows: list[HistoryRow]) -> int:
    return max((row.version for row in rows if row.success), default=0)


async def applied_version(conn: asyncpg.Connection) -> int:
    """The highest successfully applied version; 0 for a database without history."""
    return current_version(await read(conn))


async def record(
    conn: asyncpg.Connection,
    *,
    version: int,
    name: str,
    checksum: str,
    transactional: bool,
    execution_ms: int,
    success: bool,
    error: str | None = None,
    applied_by: str | None = None,
) -> None:
    """Upsert the version's row (a failed attempt's row is replaced by the next attempt's).

    A success also notifies waiters, in the same statement (one round trip); the notification is
    delivered at commit, so a waiter never sees a version that could still roll back.
    """
    await conn.execute(
        f"""WITH recorded AS (
                INSERT INTO {SCHEMA}.migration_history
                    (version, name, checksum, transactional, execution_ms, applied_by, success, error)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (version) DO UPDATE SET
                    name = EXCLUDED.name, checksum = EXCLUDED.checksum, transactional = EXCLUDED.transactional,
                    applied_at = clock_timestamp(), execution_ms = EXCLUDED.execution_ms,
                    applied_by = EXCLUDED.applied_by, success = EXCLUDED.success, error = EXCLUDED.error
                RETURNING version, success)
            SELECT pg_notify('{NOTIFY_CHANNEL}', version::text) FROM recorded WHERE success""",
        version,
        name,
        checksum,
        transactional,
        execution_ms,
        applied_by or runner_identity(),
        success,
        error,
    )


async def journal(conn: asyncpg.Connection, version: int) -> dict[int, str]:
    """Finished statements of a half-run no-transaction file: index -> statement checksum."""
    rows = await conn.fetch(
        f"SELECT statement_index, statement_checksum FROM {SCHEMA}.migration_journal WHERE version = $1", version
    )
    return {row["statement_index"]: row["statement_checksum"] for row in rows}


async def journal_statement(
    conn: asyncpg.Connection, version: int, index: int, checksum: str, execution_ms: int
) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.migration_journal (version, statement_index, statement_checksum, execution_ms) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (version, statement_index) DO UPDATE "
        "SET statement_checksum = EXCLUDED.statement_checksum, finished_at = clock_timestamp()",
        version,
        index,
        checksum,
        execution_ms,
    )


async def clear_journal(conn: asyncpg.Connection, version: int) -> None:
    await conn.execute(f"DELETE FROM {SCHEMA}.migration_journal WHERE version = $1", version)
