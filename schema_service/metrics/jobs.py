"""Housekeeping of the metrics store, run periodically by the server (schema_service.background) once ready.

Each run: partitions for today and `partitions_ahead_days` ahead, retention (whole partitions older
than `retention_days`, request ids older than `idempotency_window_s`), then baselines and anomalies.
A failing run is logged and retried at the next interval; it never stops the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from schema_service.config import MetricsSettings
from schema_service.database import DATABASE_FAILURES
from schema_service.metrics.baselines import BaselineRun, compute_baselines
from schema_service.metrics.partitions import create_partitions, drop_partitions_before, existing_days

log = logging.getLogger(__name__)

DROP_LOCK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class HousekeepingReport:
    created: list[str]
    dropped: list[str]
    request_ids_purged: int
    baselines: BaselineRun
    partitions: int  # daily partitions after this run


class Housekeeping:
    """One run per call of `run_once`; `run_forever` repeats it every housekeeping_interval_s."""

    def __init__(self, settings: MetricsSettings) -> None:
        self.settings = settings
        self._anomalies_since: datetime | None = None

    async def run_once(self, pool: asyncpg.Pool, *, now: datetime | None = None) -> HousekeepingReport:
        now = now or datetime.now(UTC)
        s = self.settings
        today = now.date()
        async with pool.acquire() as conn:
            ahead = [today + timedelta(days=n) for n in range(s.partitions_ahead_days + 1)]
            created = await create_partitions(conn, ahead)
            cutoff = today - timedelta(days=s.retention_days)
            dropped = await drop_partitions_before(conn, cutoff, lock_timeout_s=DROP_LOCK_TIMEOUT_S)
            partitions = len(await existing_days(conn))
            purged = await conn.execute(
                "DELETE FROM metric_write_requests WHERE committed_at < $1",
                now - timedelta(seconds=s.idempotency_window_s),
            )
            window_start = now - timedelta(seconds=s.baseline_window_s)
            # The first run after start scans the whole window; later runs go back one interval, for late rows.
            since = self._anomalies_since or window_start
            run = await compute_baselines(
                conn,
                window_start=window_start,
                window_end=now,
                since=since,
                min_samples=s.baseline_min_samples,
                z_score=s.anomaly_z_score,
                max_abs_value=s.max_abs_value,
            )
        self._anomalies_since = now - timedelta(seconds=s.housekeeping_interval_s)
        return HousekeepingReport(
            [d.isoformat() for d in created],
            [d.isoformat() for d in dropped],
            int(purged.split()[-1]),
            run,
            partitions,
        )

    async def run_forever(self, pool: asyncpg.Pool, on_report: Callable[[HousekeepingReport], None]) -> None:
        while True:
            try:
                report = await self.run_once(pool)
                log.info("metrics housekeeping", extra={"report": repr(report)})
                on_report(report)
            except DATABASE_FAILURES as exc:
                log.warning("metrics housekeeping failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(self.settings.housekeeping_interval_s)
