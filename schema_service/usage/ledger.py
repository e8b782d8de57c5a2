"""The ledger's write path: partitions, then one transaction per batch, exactly once per record.

The common case is a batch never seen before: its rows go in by binary COPY, the fastest way into
PostgreSQL, one COPY per chunk of the batch (records.CHUNK) in the batch's one transaction, and while the
database stores a chunk the next one is parsed (so one call in flight keeps both the service and the
database busy). A record already stored (a retry after a timeout, a lost connection, a restart of the
service, or a gateway replaying its spool) makes that COPY fail on the identity index
(caller, request_id, attempt, start_time) with a unique violation; the batch is then written again,
in a new transaction, as an INSERT ... ON CONFLICT DO NOTHING that stores only the records not yet
there and counts the rest as duplicates. A batch is acknowledged only after its transaction committed.
A bad batch is refused as such (InvalidRequest) even when the database failed or time ran out first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from asyncpg import exceptions as pg

from schema_service.database import DATABASE_FAILURES, Conn
from schema_service.dberrors import database_errors
from schema_service.deadlines import within_deadline
from schema_service.errors import InvalidRequest, SchemaServiceError
from schema_service.metrics.partitions import PartitionCache, Partitioned
from schema_service.usage.records import COLUMNS, UsageBatch

LEDGER = Partitioned("usage_ledger", lock_key=0x75736167, monthly=True)  # "usag"

_TYPES = (
    "bigint",  # start_time, as microseconds since the Unix epoch (the same on every kind of connection)
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
_VALUES = ["TIMESTAMPTZ 'epoch' + c0 * INTERVAL '1 microsecond'", *(f"c{i}" for i in range(1, len(COLUMNS)))]
_UPSERT = (
    f"INSERT INTO {LEDGER.parent} ({', '.join(COLUMNS)}) SELECT {', '.join(_VALUES)} "
    f"FROM unnest({', '.join(f'${i + 1}::{t}[]' for i, t in enumerate(_TYPES))}) "
    f"AS u({', '.join(f'c{i}' for i in range(len(COLUMNS)))}) "
    "ON CONFLICT (caller, request_id, attempt, start_time) DO NOTHING"
)


@dataclass(frozen=True)
class Recorded:
    """Records stored by this call, and records found stored before."""

    written: int
    duplicates: int


class LedgerWriter:
    """Writes RecordUsage batches; shared by all calls of one server."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], *, micro_times: bool = False) -> None:
        self._pool = pool
        self._micro_times = micro_times  # the pool's connections take times as integers (database.micro_times_codec)
        self.partitions = PartitionCache(LEDGER)

    async def write(self, batch: UsageBatch, *, timeout_s: float | None = None) -> Recorded:
        """Store the batch's records exactly once, within `timeout_s` (the call's remaining deadline)."""
        try:
            return await within_deadline(self._write(batch), timeout_s)
        except InvalidRequest:
            raise
        except SchemaServiceError:
            batch.check()  # the database failed or time ran out, but a bad batch is refused for what it is
            raise

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
                        await self._copy(conn, batch)
                    return Recorded(len(batch), 0)
                except pg.UniqueViolationError:
                    columns = list(zip(*batch.rows(micro_times=self._micro_times), strict=True))
                    async with conn.transaction():
                        status = await conn.execute(_UPSERT, batch.micros, *columns[1:])
            except DATABASE_FAILURES:
                conn.terminate()  # a connection broken mid-operation must not serve the next batch
                raise
        written = int(status.split()[-1])
        return Recorded(written, len(batch) - written)

    async def _copy(self, conn: Conn, batch: UsageBatch) -> None:
        """One COPY per chunk; the next chunk is parsed while the database stores the one before."""
        storing: asyncio.Task[str] | None = None
        try:
            for rows in batch.chunks(micro_times=self._micro_times):
                if storing is not None:
                    await storing
                storing = asyncio.create_task(conn.copy_records_to_table(LEDGER.parent, records=rows, columns=COLUMNS))
                await asyncio.sleep(0)  # the COPY encodes and sends its rows before the next chunk is parsed
            if storing is not None:
                await storing
        except BaseException:
            if storing is not None:
                await _abandon(storing)  # left early (a bad chunk, the deadline): the COPY ends before the transaction
            raise


async def _abandon(task: asyncio.Task[str]) -> None:
    """Cancel `task` and wait for it to end, without taking on its outcome (the caller leaves with its own)."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not report it as lost
