"""Range partitions by time: daily for `system_performance_metrics` (`..._pYYYYMMDD`), monthly for the usage
ledger (`usage_ledger_pYYYYMM`).

The service creates them ahead of time (and on demand for a batch that reaches a period without one);
retention drops whole partitions. Creation is serialised across replicas by an advisory lock per table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg

from schema_service.database import Conn


@dataclass(frozen=True)
class Partitioned:
    """A table partitioned by range of a timestamptz column, one partition per day or per calendar month.

    A period is named by its first day (a `date`); `period_of` maps any day to it.
    """

    parent: str
    lock_key: int  # any constant: only partition DDL of this table takes it
    monthly: bool = False

    def period_of(self, day: date) -> date:
        return day.replace(day=1) if self.monthly else day

    def name(self, period: date) -> str:
        return f"{self.parent}_p{period:%Y%m}" if self.monthly else f"{self.parent}_p{period:%Y%m%d}"

    def bounds(self, period: date) -> tuple[datetime, datetime]:
        start = datetime(period.year, period.month, period.day, tzinfo=UTC)
        if not self.monthly:
            return start, start + timedelta(days=1)
        return start, (start + timedelta(days=32)).replace(day=1)

    def parse(self, relname: str) -> date | None:
        digits = 6 if self.monthly else 8
        m = re.fullmatch(rf"{re.escape(self.parent)}_p(\d{{{digits}}})", relname)
        if m is None:
            return None
        return datetime.strptime(m.group(1) + ("01" if self.monthly else ""), "%Y%m%d").date()


METRICS = Partitioned("system_performance_metrics", lock_key=0x6D657472)  # "metr"
PARENT = METRICS.parent


def partition_name(day: date) -> str:
    return METRICS.name(day)


async def existing_days(conn: Conn, table: Partitioned = METRICS) -> set[date]:
    """Periods (their first days) that have a partition attached to the parent."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass",
        table.parent,
    )
    return {period for r in rows if (period := table.parse(r["relname"])) is not None}


async def create_partitions(conn: Conn, days: Iterable[date], table: Partitioned = METRICS) -> list[date]:
    """Create the missing partitions for the periods of `days`; returns the periods created."""
    created: list[date] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", table.lock_key)
        missing = sorted({table.period_of(d) for d in days} - await existing_days(conn, table))
        for period in missing:
            start, end = table.bounds(period)
            await conn.execute(
                f"CREATE TABLE {table.name(period)} PARTITION OF {table.parent} "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
            created.append(period)
    return created


async def drop_partitions_before(
    conn: Conn, cutoff: date, *, lock_timeout_s: float, table: Partitioned = METRICS
) -> list[date]:
    """Drop whole partitions that end on or before `cutoff`; returns the periods dropped.

    The lock timeout keeps a drop from queueing writers behind it for long; a drop that times out
    is retried by the next housekeeping run.
    """
    dropped: list[date] = []
    for period in sorted(p for p in await existing_days(conn, table) if table.bounds(p)[1].date() <= cutoff):
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_s * 1000)}")
            await conn.execute(f"DROP TABLE IF EXISTS {table.name(period)}")  # another replica may be first
        dropped.append(period)
    return dropped


class PartitionCache:
    """Periods known to have a partition, so a batch needs no catalog query in the common case."""

    def __init__(self, table: Partitioned = METRICS) -> None:
        self.table = table
        self.days: set[date] = set()

    async def ensure(self, pool: asyncpg.Pool, wanted: set[date]) -> None:
        """Make sure each of these days has a partition."""
        if self.days.issuperset(self.table.period_of(d) for d in wanted):
            return
        async with pool.acquire() as conn:
            await create_partitions(conn, wanted, self.table)
            self.days = await existing_days(conn, self.table)

    def forget(self) -> None:
        """After a row found no partition (another replica's retention dropped one): ask the catalog again."""
        self.days.clear()
