"""Connections to PostgreSQL: a pool for the service, and the embedded server when no URL is given.

The embedded server is the `pgserver` wheel (PostgreSQL 16) listening on a Unix socket only.
Run as root it creates an OS user `pgserver` and opens read/execute permissions on the data
folder's parent directories, so keep the data folder somewhere that is harmless
(the default `./.data/postgres` inside the checkout is).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

# A connection, whether taken from a pool or opened directly.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

# What the OS and asyncpg's client side raise when the connection is lost or never made: refused or reset
# sockets, timeouts, and the protocol errors asyncpg raises on a connection broken mid-operation
# (MagicStack/asyncpg#784). No SQLSTATE: the server never answered.
CONNECTION_LOST: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
# Everything a call to the database can raise because of the database or the way to it: a lost
# connection or any PostgreSQL error. Callers that only need "not now" (readiness, start-up retries,
# housekeeping) catch this; schema_service.dberrors maps each to a status.
DATABASE_FAILURES: tuple[type[Exception], ...] = (*CONNECTION_LOST, asyncpg.PostgresError)

_embedded: dict[Path, Any] = {}


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under `data_dir`; returns a DSN to database `postgres`."""
    data_dir = data_dir.resolve()
    if data_dir not in _embedded:
        data_dir.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded postgresql", extra={"data_dir": str(data_dir)})
        with warnings.catch_warnings():
            # pgserver keeps its lock file in the user runtime dir; without XDG_RUNTIME_DIR (containers,
            # CI) platformdirs warns and falls back to /tmp, which is fine for a lock file.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            import pgserver

            _embedded[data_dir] = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
    uri: str = _embedded[data_dir].get_uri("postgres")
    return uri


def with_database(dsn: str, database: str) -> str:
    """The same server and role, another database."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Create database `name` on the server of `admin_dsn` unless it exists."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool that reconnects by itself after the server comes back (asyncpg replaces dead connections)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"application_name": "schema-service"},
    )
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool, *, timeout_s: float = 2.0) -> bool:
    """True when the database answers `SELECT 1` within the timeout."""
    try:
        async with pool.acquire(timeout=timeout_s) as conn:
            await conn.fetchval("SELECT 1", timeout=timeout_s)
        return True
    except DATABASE_FAILURES:
        return False
