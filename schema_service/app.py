"""Shared state of one running schema service: settings, the database pool, health."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncpg

from schema_service import database
from schema_service.config import Settings
from schema_service.errors import DatabaseUnavailable
from schema_service.instruments import SchemaMetrics

log = logging.getLogger(__name__)


@dataclass
class App:
    """What servicers share. `pool` is None until the database was first reached."""

    settings: Settings
    dsn: str
    pool: asyncpg.Pool | None = None
    # The write paths' own pool (COPY of metrics and usage rows), its times as integers (database.micro_times_codec);
    # opened and closed with `pool`.
    write_pool: asyncpg.Pool | None = None
    # Set by readiness once the schema has reached the migrations' version (schema_service.background), and
    # kept: until then writes and queries would fail on missing tables, so they are refused (require_pool).
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    instruments: SchemaMetrics | None = None  # Prometheus families, when the server has a registry
    _connecting: asyncio.Lock = field(default_factory=asyncio.Lock)

    def require_pool(self) -> asyncpg.Pool:
        """The pool, or DatabaseUnavailable (UNAVAILABLE + RetryInfo) while the database is unreachable
        or not yet migrated (the schema gate)."""
        if self.pool is None:
            raise DatabaseUnavailable("database not reachable yet", retry_after_s=1.0)
        if not self.ready.is_set():
            raise DatabaseUnavailable("database schema not migrated yet", retry_after_s=1.0)
        return self.pool

    def require_write_pool(self) -> asyncpg.Pool:
        """The writers' pool, refused as require_pool refuses."""
        self.require_pool()
        assert self.write_pool is not None  # opened before `pool`
        return self.write_pool

    async def connect(self) -> asyncpg.Pool:
        """Open the pool, retrying with backoff until the database answers; callers at once share one pool."""
        delay = 0.2
        async with self._connecting:
            while self.pool is None:
                try:
                    if self.write_pool is None:
                        self.write_pool = await database.create_pool(self.dsn, micro_times=True)
                    self.pool = await database.create_pool(self.dsn)
                except database.DATABASE_FAILURES as exc:
                    where = database.unreachable(self.dsn, exc)
                    log.warning(f"database not reachable: {where}", extra={"retry_s": delay})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        return self.pool

    async def close(self) -> None:
        for pool in (self.pool, self.write_pool):
            if pool is not None:
                await pool.close()
