"""Rolling baselines per series, and the values far outside them (anomalies).

A run computes mean and population standard deviation of each series over the baseline window
(series with fewer than `min_samples` values get none), then records every value since `since`
whose distance from its series' mean exceeds `z_score` standard deviations. Anomalies are keyed
by (series, time), so scanning a range twice records nothing twice.

Values beyond `max_abs_value` (only rows written before writes were bounded, or under a larger bound, can
hold them) are left out: one such value would make the aggregate overflow (SQLSTATE 22003) and fail the run for every
series, not only its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schema_service.database import Conn

_BASELINES = """
INSERT INTO performance_baselines AS b
    (series_id, mean, stddev, sample_count, window_start, window_end, computed_at)
SELECT series_id, avg(value), coalesce(stddev_pop(value), 0), count(*), $1, $2, now()
FROM system_performance_metrics
WHERE time >= $1 AND time < $2 AND abs(value) <= $4
GROUP BY series_id
HAVING count(*) >= $3
ON CONFLICT (series_id) DO UPDATE SET
    mean = EXCLUDED.mean, stddev = EXCLUDED.stddev, sample_count = EXCLUDED.sample_count,
    window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end, computed_at = EXCLUDED.computed_at
"""

_ANOMALIES = """
INSERT INTO performance_anomalies (series_id, time, value, baseline_mean, baseline_stddev, z_score)
SELECT m.series_id, m.time, m.value, b.mean, b.stddev, (m.value - b.mean) / b.stddev
FROM system_performance_metrics m JOIN performance_baselines b USING (series_id)
WHERE m.time >= $1 AND m.time < $2 AND abs(m.value) <= $4 AND b.stddev > 0 AND abs(m.value - b.mean) > $3 * b.stddev
ON CONFLICT (series_id, time) DO NOTHING
"""


@dataclass(frozen=True)
class BaselineRun:
    baselines: int
    anomalies: int


async def compute_baselines(
    conn: Conn,
    *,
    window_start: datetime,
    window_end: datetime,
    since: datetime,
    min_samples: int,
    z_score: float,
    max_abs_value: float,
) -> BaselineRun:
    """Refresh baselines over [window_start, window_end) and record anomalies in [since, window_end)."""
    async with conn.transaction():
        baselines = await conn.execute(_BASELINES, window_start, window_end, min_samples, max_abs_value)
        anomalies = await conn.execute(_ANOMALIES, since, window_end, z_score, max_abs_value)
    return BaselineRun(_row_count(baselines), _row_count(anomalies))


def _row_count(status: str) -> int:
    """Rows affected, from a command tag such as `INSERT 0 12`."""
    return int(status.rsplit(" ", 1)[-1])
