"""Daily range partitions of `system_performance_metrics`, named `system_performance_metrics_pYYYYMMDD`.

The service creates them ahead of time (and on demand for a batch that reaches a day without one);
retention drops whole partitions. Creation is serialised across replicas by an advisory lock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import asyncpg

from schema_service.database import Conn

PARENT = "system_performance_metrics"
NAME_RE = re.compile(rf"{PARENT}_p(\d{{8}})")
# Any constant: only partition DDL of this table takes it.
LOCK_KEY = 0x6D657472  # "metr"


def partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


async def existing_days(conn: Conn) -> set[date]:
    """Days that have a partition attached to the parent."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass",
        PARENT,
    )
    return {datetime.strptime(m.group(1), "%Y%m%d").date() for r in rows if (m := NAME_RE.fullmatch(r["relname"]))}


async def create_partitions(conn: Conn, days: Iterable[date]) -> list[date]:
    """Create the missing partitions among `days`; returns the days created."""
    created: list[date] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        missing = sorted(set(days) - await existing_days(conn))
        for day in missing:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            await conn.execute(
                f"CREATE TABLE {partition_name(day)} PARTITION OF {PARENT} "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{(start + timedelta(days=1)).isoformat()}')"
            )
            created.append(day)
    return created


async def drop_partitions_before(conn: Conn, cutoff: date, *, lock_timeout_s: float) -> list[date]:
    """Drop whole partitions of days before `cutoff`; returns the days dropped.

    The lock timeout keeps a drop from queueing writers behind it for long; a drop that times out
    is retried by the next housekeeping run.
    """
    dropped: list[date] = []
    for day in sorted(d for d in await existing_days(conn) if d < cutoff):
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_s * 1000)}")
            await conn.execute(f"DROP TABLE IF EXISTS {partition_name(day)}")  # another replica may be first
        dropped.append(day)
    return dropped


class PartitionCache:
    """Days known to have a partition, so a batch needs no catalog query in the common case."""

    def __init__(self) -> None:
        self.days: set[date] = set()

    async def ensure(self, pool: asyncpg.Pool, wanted: set[date]) -> None:
        """Make sure each of these days has a partition."""
        if self.days.issuperset(wanted):
            return
        async with pool.acquire() as conn:
            await create_partitions(conn, wanted)
            self.days = await existing_days(conn)

    def forget(self) -> None:
        """After a row found no partition (another replica's retention dropped one): ask the catalog again."""
        self.days.clear()
