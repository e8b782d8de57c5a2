"""Housekeeping of the usage ledger: monthly partitions ahead of time, and retention by whole partitions.

Run by the server (schema_service.background) once the schema is ready, every metrics.housekeeping_interval_s;
a failing run is logged and retried at the next interval, never stopping the server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from schema_service.config import UsageSettings
from schema_service.metrics.partitions import create_partitions, drop_partitions_before
from schema_service.usage.ledger import LEDGER

log = logging.getLogger(__name__)

DROP_LOCK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class LedgerHousekeeping:
    created: list[date]
    dropped: list[date]


def months_from(day: date, n: int) -> date:
    """The first day of the month `n` months after (or before, for negative n) the month of `day`."""
    index = day.year * 12 + day.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


async def ledger_housekeeping(pool: asyncpg.Pool, settings: UsageSettings, now: datetime) -> LedgerHousekeeping:
    today = now.date()
    async with pool.acquire() as conn:
        ahead = [months_from(today, n) for n in range(settings.partitions_ahead_months + 1)]
        created = await create_partitions(conn, ahead, LEDGER)
        cutoff = months_from(today, -settings.retention_months)
        dropped = await drop_partitions_before(conn, cutoff, lock_timeout_s=DROP_LOCK_TIMEOUT_S, table=LEDGER)
    return LedgerHousekeeping(created, dropped)
