"""Connections to PostgreSQL: a pool for the service, DSN helpers, and what a lost database looks like.

Without a URL, and only when told to (--embedded), the service uses the embedded server (schema_service.embedded).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
from asyncpg.connect_utils import SessionAttribute
from asyncpg.pool import PoolConnectionProxy

from schema_service import embedded
from schema_service.config import Settings
from servicekit.settings import SettingsError

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


def session_attrs(dsn: str) -> SessionAttribute | None:
    """`target_session_attrs=read-write` unless the URL or PGTARGETSESSIONATTRS says otherwise: the service
    writes, so of a multi-host URL's servers only a primary will do (asyncpg skips standbys and reconnects
    to whichever server is the primary after a failover). PostgreSQL 14+ reports the state at connect, so
    the check costs no query."""
    if "target_session_attrs" in parse_qs(urlsplit(dsn).query) or os.environ.get("PGTARGETSESSIONATTRS"):
        return None  # asyncpg then takes the URL's or the environment's
    return SessionAttribute.read_write


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    micro_times: bool = False,
) -> asyncpg.Pool:
    """A pool that reconnects by itself after the server comes back (asyncpg replaces dead connections);
    with `micro_times`, its connections exchange times as integers (see micro_times_codec)."""
    pool: asyncpg.Pool | None = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=micro_times_codec if micro_times else None,
        server_settings={"application_name": "schema-service"},
        target_session_attrs=session_attrs(dsn),
    )
    assert pool is not None
    # Pools cannot be weakly referenced: closed ones are forgotten whenever a pool is added.
    _pools.difference_update([p for p in _pools if p.is_closing()])
    _pools.add(pool)
    return pool


# PostgreSQL's epoch, 2000-01-01 UTC, in microseconds since the Unix epoch.
PG_EPOCH_US = 946_684_800_000_000


async def micro_times_codec(conn: asyncpg.Connection) -> None:
    """Exchange timestamptz on this connection in asyncpg's tuple format: (microseconds since PG_EPOCH_US,).

    For the writers' pool only (App.write_pool). The write paths hold each time as integer microseconds
    already; a datetime made only for COPY costs about 0.3 us to make and 0.6 us more for asyncpg to encode
    than the integer (bench/ingest_profile.py). `tuple` is both encoder and decoder: a 1-tuple passes
    through unchanged, while a datetime sent here by mistake fails loudly instead of being stored wrong."""
    await conn.set_type_codec("timestamptz", schema="pg_catalog", encoder=tuple, decoder=tuple, format="tuple")


_pools: set[asyncpg.Pool] = set()
_expiring: set[asyncio.Task[None]] = set()


def drop_read_only_connections() -> None:
    """A server answered 25006 (read-only transaction): a standby, or a primary demoted under us. Every
    pooled connection may point at it, so all are replaced at their next acquire, which connects anew
    (to the primary, with target_session_attrs=read-write)."""
    for pool in [p for p in _pools if not p.is_closing()]:
        task = asyncio.ensure_future(pool.expire_connections())
        _expiring.add(task)
        task.add_done_callback(_expiring.discard)


_WRITABLE = "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'"


async def check(pool: asyncpg.Pool, *, timeout_s: float = 2.0) -> str | None:
    """None when the database answers and accepts writes; else why not (for readiness and its log)."""
    try:
        async with pool.acquire(timeout=timeout_s) as conn:
            row = await conn.fetchrow(_WRITABLE, timeout=timeout_s)
    except DATABASE_FAILURES as exc:
        sqlstate = getattr(exc, "sqlstate", None)
        return f"{type(exc).__name__}" + (f" (SQLSTATE {sqlstate})" if sqlstate else f": {exc}"[:200])
    in_recovery, read_only = row if row is not None else (False, False)
    if in_recovery or read_only:
        await pool.expire_connections()
        return "the server is read-only (a standby in recovery)" if in_recovery else "the server is read-only"
    return None


def hosts(dsn: str) -> str:
    """The host:port list of a URL (never its user or password), or the socket folder."""
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return netloc or ",".join(parse_qs(parts.query).get("host", [])) or "local socket"


@dataclass
class Availability:
    """One log line when the database becomes unavailable and one when it is back (host, how long, the
    reason), however many checks fail in between."""

    dsn: str
    down_since: float | None = None
    reason: str | None = None

    def observe(self, problem: str | None) -> None:
        now = time.monotonic()
        if problem is not None and self.down_since is None:
            self.down_since, self.reason = now, problem
            log.warning("database unavailable", extra={"hosts": hosts(self.dsn), "reason": problem})
        elif problem is None and self.down_since is not None:
            extra = {"hosts": hosts(self.dsn), "down_s": round(now - self.down_since, 3), "reason": self.reason}
            log.warning("database available again", extra=extra)
            self.down_since = self.reason = None


# "Not yet" rather than "wrong": nothing listens (PostgreSQL still starting, its Service without endpoints), the
# name does not resolve yet, a connect timeout, or SQLSTATE 57P03 "the database system is starting up". A refused
# password or an unknown role is not among them: waiting cannot mend it.
NOT_YET: tuple[type[Exception], ...] = (OSError, TimeoutError, asyncpg.CannotConnectNowError)


async def wait_until_reachable(dsn: str, budget_s: float, say: Callable[[str], None]) -> None:
    """Return once a connection to `dsn` opens; while it cannot yet, `say` why and retry (backoff 0.5 s to 5 s)
    until `budget_s` is spent, then raise the last failure."""
    deadline, delay = time.monotonic() + budget_s, 0.5
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=max(0.1, min(10.0, deadline - time.monotonic())))
        except NOT_YET as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            say(f"waiting for {unreachable(dsn, exc)} ({left:.0f} s left of --lock-wait)")
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)
            continue
        await conn.close()
        return


def unreachable(dsn: str, exc: BaseException) -> str:
    """One line for a database that could not be reached: where (hosts and database; never the password)
    and why, in the server's own words (`role "nobody" does not exist`) or the OS's (`Connection refused`)."""
    parts = urlsplit(dsn)
    database = parts.path.lstrip("/") or parts.username or "postgres"
    errno = exc.errno if isinstance(exc, OSError) else None
    if isinstance(exc, socket.gaierror):  # its errno is the resolver's (-2), which os.strerror calls `Unknown error -2`
        reason = f"cannot resolve the host ({exc.strerror})"  # `Name or service not known`
    else:
        reason = (os.strerror(errno) if errno else str(exc)) or type(exc).__name__
    return f"PostgreSQL at {hosts(dsn)}, database {database!r}: {reason}"


NO_DATABASE = (
    "no database given: set DATABASE_URL or pass --database-url URL "
    "(or --embedded for a throwaway embedded PostgreSQL under --data-dir, as make run does)"
)


async def resolve_dsn(settings: Settings) -> str:
    """The configured URL, or with --embedded database `embedded_database` of the embedded server under
    `data_dir` (started on demand): what both `serve` and the CLI commands connect to. Neither is a
    SettingsError: a DBA who forgot DATABASE_URL must not migrate a throwaway database and see success."""
    if settings.dsn:
        return settings.dsn
    if not settings.embedded:
        raise SettingsError(NO_DATABASE)
    if not embedded.installed():
        raise SettingsError(embedded.NOT_INSTALLED)
    admin = await asyncio.to_thread(embedded.start_postgres, settings.data_dir)
    await ensure_database(admin, settings.embedded_database)
    return with_database(admin, settings.embedded_database)
