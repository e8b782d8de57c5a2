"""The write path: admission, idempotency, partitions, series, binary COPY, one transaction per batch.

A batch is acknowledged only after its transaction committed; the batch's request_id is inserted
in that same transaction, so a retried batch (after a timeout, a lost connection or a restart of
the service) is found and acknowledged without writing its rows again. The digest of the batch's
content is stored beside the id: a repeat with other content is refused (REQUEST_ID_REUSED,
INVALID_ARGUMENT: the request is wrong as sent and never succeeds unchanged; ALREADY_EXISTS would
say the caller's data is there, which is just what is not true), never acknowledged as a duplicate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from asyncpg import exceptions as pg

from schema_service.config import MetricsSettings
from schema_service.database import DATABASE_FAILURES, Conn
from schema_service.dberrors import RETRY_AFTER_S, database_errors
from schema_service.deadlines import within_deadline
from schema_service.errors import DatabaseUnavailable, Overloaded, RequestIdReused
from schema_service.metrics.partitions import PARENT, PartitionCache
from schema_service.metrics.series import Series
from schema_service.metrics.validation import Batch
from servicekit.errors import FieldViolation

COLUMNS = ("time", "series_id", "value", "metadata")
MAX_KNOWN_SERIES = 1_000_000

# Request ids are unique per writing caller (migration 016): one caller's ids never meet another's.
_CLAIM = """
INSERT INTO metric_write_requests (caller, request_id, written_count, batch_digest) VALUES ($1, $2, $3, $4)
ON CONFLICT (caller, request_id) DO NOTHING RETURNING written_count
"""
_INSERT_SERIES = """
INSERT INTO metric_series (series_id, name, unit, labels, caller)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[], $5::text[])
ON CONFLICT (series_id) DO NOTHING
"""


@dataclass(frozen=True)
class WriteResult:
    """How many metrics the batch stored, and whether it had been stored before."""

    written_count: int
    duplicate: bool


class MetricsWriter:
    """Writes batches; shared by all calls of one server."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        settings: MetricsSettings,
        on_copy: Callable[[float], None] | None = None,
        *,
        micro_times: bool = False,
    ) -> None:
        self._pool = pool
        self.settings = settings
        self._micro_times = micro_times  # the pool's connections take times as integers (database.micro_times_codec)
        self._on_copy = on_copy  # told each batch's COPY time (seconds), for the copy latency histogram
        self.partitions = PartitionCache()
        self._slots = asyncio.Semaphore(settings.max_in_flight_batches)
        # Series known to be committed; only these may skip the insert into metric_series.
        self._known_series: set[int] = set()

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold one of max_in_flight_batches slots, or refuse with Overloaded after admission_wait_s."""
        try:
            async with asyncio.timeout(self.settings.admission_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            limit = self.settings.max_in_flight_batches
            raise Overloaded(
                f"more than max_in_flight_batches={limit} write batches in flight; retry later",
                metadata={"limit": "max_in_flight_batches", "max": str(limit)},
                retry_after_s=max(0.1, self.settings.admission_wait_s),
            ) from None
        try:
            yield
        finally:
            self._slots.release()

    async def write(self, batch: Batch, *, timeout_s: float | None = None) -> WriteResult:
        """Store the batch exactly once, within `timeout_s` (the call's remaining deadline).

        DatabaseUnavailable or DeadlineExceeded when it cannot be known to have happened: the retry with
        the same request_id then stores it, or finds it stored.
        """
        return await within_deadline(self._write(batch), timeout_s)

    async def _write(self, batch: Batch) -> WriteResult:
        with database_errors("write"):
            pool = self._pool()
            for attempt in (1, 2):
                await self.partitions.ensure(pool, batch.days())
                try:
                    result = await self._commit(pool, batch)
                except pg.CheckViolationError as exc:
                    # No partition for a row: another replica's retention dropped one we thought existed.
                    if attempt == 2 or "no partition" not in str(exc):
                        raise
                    self.partitions.forget()
                    continue
                self._remember(batch.series)
                return result
        raise AssertionError("unreachable")

    async def _commit(self, pool: asyncpg.Pool, batch: Batch) -> WriteResult:
        count = len(batch.rows)
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():
                    if await conn.fetchval(_CLAIM, batch.caller, batch.request_id, count, batch.digest) is None:
                        return await _duplicate(conn, batch)
                    new = [s for sid, s in batch.series.items() if sid not in self._known_series]
                    if new:
                        await conn.execute(_INSERT_SERIES, *_series_columns(new))
                    began = time.perf_counter()
                    rows = batch.rows if self._micro_times else batch.records
                    await conn.copy_records_to_table(PARENT, records=rows, columns=COLUMNS)
                    if self._on_copy is not None:
                        self._on_copy(time.perf_counter() - began)
            except DATABASE_FAILURES:
                # A connection broken mid-operation must not go back to the pool for the next batch; telling
                # broken from merely refused is not worth it on this rare path, so neither goes back.
                conn.terminate()
                raise
        return WriteResult(count, duplicate=False)

    def _remember(self, series: dict[int, Series]) -> None:
        if len(self._known_series) + len(series) > MAX_KNOWN_SERIES:
            self._known_series.clear()
        self._known_series.update(series)


async def _duplicate(conn: Conn, batch: Batch) -> WriteResult:
    """The request_id was committed before (the claim found its row); check it is the same content."""
    stored = await conn.fetchrow(
        "SELECT written_count, batch_digest FROM metric_write_requests WHERE caller = $1 AND request_id = $2",
        batch.caller,
        batch.request_id,
    )
    if stored is None:  # purged since the claim found it (older than idempotency_window_s): try again afresh
        raise DatabaseUnavailable(
            f"request_id {batch.request_id!r} expired while being checked; retry", retry_after_s=RETRY_AFTER_S
        )
    count, stored_count = len(batch.rows), stored["written_count"]
    digest = stored["batch_digest"]  # NULL for ids recorded before migration 011: compared by count only
    if stored_count != count or (digest is not None and bytes(digest) != batch.digest):
        raise RequestIdReused(
            f"request_id {batch.request_id!r} was already used for a different batch ({stored_count} "
            f"metrics, this one has {count}); a retry must carry the same metrics, a new batch a new request_id",
            field_violations=[FieldViolation("request_id", "already used for a batch with other content")],
        )
    return WriteResult(count, duplicate=True)


def _series_columns(series: list[Series]) -> tuple[list[int], list[str], list[str], list[str], list[str]]:
    return (
        [s.series_id for s in series],
        [s.name for s in series],
        [s.unit for s in series],
        [s.labels_json for s in series],
        [s.caller for s in series],
    )
