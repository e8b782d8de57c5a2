"""The ledger's write path: partitions, then one transaction per batch, exactly once per record.

The common case is a batch never seen before: its rows go in by binary COPY, the fastest way into
PostgreSQL. A record already stored (a retry after a timeout, a lost connection, a restart of the
service, or a gateway replaying its spool) makes that COPY fail on the identity index
(caller, request_id, attempt, start_time) with a unique violation; the batch is then written again,
in a new transaction, as an INSERT ... ON CONFLICT DO NOTHING that stores only the records not yet
there and counts the rest as duplicates. A batch is acknowledged only after its transaction committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from asyncpg import exceptions as pg

from schema_service.database import DATABASE_FAILURES
from schema_service.dberrors import database_errors
from schema_service.deadlines import within_deadline
from schema_service.metrics.partitions import PartitionCache, Partitioned
from schema_service.usage.records import COLUMNS, UsageBatch

LEDGER = Partitioned("usage_ledger", lock_key=0x75736167, monthly=True)  # "usag"

_TYPES = (
    "timestamptz",
    "text",
    "text",
    "integer",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "bigint",
    "bigint",
    "bigint",
    "bigint",
    "bigint",
    "numeric",
    "text",
    "boolean",
    "double precision",
    "double precision",
    "boolean",
    "boolean",
    "text",
)
_UPSERT = (
    f"INSERT INTO {LEDGER.parent} ({', '.join(COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'${i + 1}::{t}[]' for i, t in enumerate(_TYPES))}) "
    "ON CONFLICT (caller, request_id, attempt, start_time) DO NOTHING"
)


@dataclass(frozen=True)
class Recorded:
    """Records stored by this call, and records found stored before."""

    written: int
    duplicates: int


class LedgerWriter:
    """Writes RecordUsage batches; shared by all calls of one server."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool
        self.partitions = PartitionCache(LEDGER)

    async def write(self, batch: UsageBatch, *, timeout_s: float | None = None) -> Recorded:
        """Store the batch's records exactly once, within `timeout_s` (the call's remaining deadline)."""
        return await within_deadline(self._write(batch), timeout_s)

    async def _write(self, batch: UsageBatch) -> Recorded:
        with database_errors("record usage"):
            pool = self._pool()
            for attempt in (1, 2):
                await self.partitions.ensure(pool, batch.days())
                try:
                    return await self._commit(pool, batch)
                except pg.CheckViolationError as exc:
                    # No partition for a row: another replica's retention dropped one we thought existed.
                    if attempt == 2 or "no partition" not in str(exc):
                        raise
                    self.partitions.forget()
        raise AssertionError("unreachable")

    async def _commit(self, pool: asyncpg.Pool, batch: UsageBatch) -> Recorded:
        async with pool.acquire() as conn:
            try:
                try:
                    async with conn.transaction():
                        await conn.copy_records_to_table(LEDGER.parent, records=batch.rows, columns=COLUMNS)
                    return Recorded(len(batch.rows), 0)
                except pg.UniqueViolationError:
                    async with conn.transaction():
                        status = await conn.execute(_UPSERT, *zip(*batch.rows, strict=True))
            except DATABASE_FAILURES:
                conn.terminate()  # a connection broken mid-operation must not serve the next batch
                raise
        written = int(status.split()[-1])
        return Recorded(written, len(batch.rows) - written)
