"""Reading the metrics store: bucketed aggregates of one metric, baselines, anomalies.

Each read covers the series of one writing caller (`caller`), or of every writer (None); who may ask
for which is the servicer's business (metrics.read_all). Each runs in a read-only transaction under
a statement timeout (MetricsSettings.query_timeout_s), and a query takes at most MAX_LABELS labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from google.protobuf import duration_pb2, timestamp_pb2

from schema_service.dberrors import database_errors
from schema_service.errors import InvalidRequest
from schema_service.metrics.validation import MAX_LABEL_VALUE_CHARS, MAX_LABELS, NAME_RE, NO_NUL, NUL
from servicekit.errors import FieldViolation

MAX_BUCKETS = 10_000
# Query times lie strictly inside the range of google.protobuf.Timestamp (years 0001-9999), which PostgreSQL's
# timestamptz holds; the very first and last microsecond are left out because asyncpg sends datetime.min and
# datetime.max as -infinity and infinity, which date_bin() refuses ("origin out of range").
MIN_QUERY_SECONDS = -62_135_596_800 + 1
MAX_QUERY_SECONDS = 253_402_300_799 - 1
EARLIEST = datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC)
TIME_RULE = "must lie between 0001-01-01T00:00:01Z and 9999-12-31T23:59:58Z"
# Longest bucket_width taken: google.protobuf.Duration's own limit (about 10,000 years).
MAX_BUCKET_SECONDS = 315_576_000_000
NAME_RULE = "1-200 characters of [A-Za-z0-9_.:/-], starting with a letter"
MAX_PAGE_SIZE = 1_000
DEFAULT_PAGE_SIZE = 100
# Fixed SQL per aggregate: the query text is built only from these, never from input.
AGGREGATES = {
    "sum": "sum(m.value)",
    "min": "min(m.value)",
    "max": "max(m.value)",
    "avg": "avg(m.value)",
    "p50": "percentile_cont(0.5) WITHIN GROUP (ORDER BY m.value)",
    "p95": "percentile_cont(0.95) WITHIN GROUP (ORDER BY m.value)",
    "p99": "percentile_cont(0.99) WITHIN GROUP (ORDER BY m.value)",
}


@dataclass(frozen=True)
class MetricQuery:
    """One metric (series carrying all `labels`, written by `caller`; None: by anyone), [start, end),
    buckets of `bucket` (None: one bucket)."""

    name: str
    labels: dict[str, str]
    start: datetime
    end: datetime
    bucket: timedelta | None
    aggregates: frozenset[str]
    caller: str | None = ""


@dataclass(frozen=True)
class Bucket:
    start: datetime
    count: int
    aggregates: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BaselineRow:
    name: str
    labels: dict[str, str]
    mean: float
    stddev: float
    sample_count: int
    window_start: datetime
    window_end: datetime
    computed_at: datetime
    caller: str


@dataclass(frozen=True)
class AnomalyRow:
    name: str
    labels: dict[str, str]
    value: float
    baseline_mean: float
    baseline_stddev: float
    z_score: float
    time: datetime
    caller: str


def range_violation(value: timestamp_pb2.Timestamp | duration_pb2.Duration, path: str) -> FieldViolation | None:
    """The violation of a request's Timestamp or Duration field outside what the store can take, if any."""
    if not 0 <= value.nanos < 1_000_000_000:
        return FieldViolation(path, "nanos must be 0-999,999,999")
    if isinstance(value, timestamp_pb2.Timestamp):
        return None if MIN_QUERY_SECONDS <= value.seconds <= MAX_QUERY_SECONDS else FieldViolation(path, TIME_RULE)
    if 0 <= value.seconds <= MAX_BUCKET_SECONDS:
        return None
    return FieldViolation(path, f"must be positive and at most {MAX_BUCKET_SECONDS} s")


def check_ranges(fields: dict[str, timestamp_pb2.Timestamp | duration_pb2.Duration]) -> None:
    """InvalidRequest naming every field of `fields` (path -> value) out of range."""
    bad = [v for path, value in fields.items() if (v := range_violation(value, path)) is not None]
    if bad:
        raise InvalidRequest("time or duration out of range", field_violations=bad)


def check_name(name: str, *, optional: bool = False) -> None:
    """InvalidRequest unless `name` is a valid metric name (or empty, when `optional`)."""
    if not (optional and name == "") and not NAME_RE.fullmatch(name):
        raise InvalidRequest("invalid metric name", field_violations=[FieldViolation("name", NAME_RULE)])


def check_query(query: MetricQuery) -> None:
    """InvalidRequest naming every bad field of the query."""
    bad: list[FieldViolation] = []
    if not NAME_RE.fullmatch(query.name):
        bad.append(FieldViolation("name", NAME_RULE))
    if len(query.labels) > MAX_LABELS:
        bad.append(FieldViolation("labels", f"at most {MAX_LABELS} labels (a series has no more)"))
    for key, value in list(query.labels.items())[:MAX_LABELS]:
        if NUL in key or NUL in value:
            bad.append(FieldViolation(f"labels[{key[:64]!r}]", f"label keys and values {NO_NUL}"))
        elif len(key) > MAX_LABEL_VALUE_CHARS or len(value) > MAX_LABEL_VALUE_CHARS:
            bad.append(FieldViolation(f"labels[{key[:64]!r}]", f"at most {MAX_LABEL_VALUE_CHARS} characters"))
    if query.end <= query.start:
        bad.append(FieldViolation("end_time", "must be after start_time"))
    elif query.bucket is not None:
        if query.bucket <= timedelta(0):
            bad.append(FieldViolation("bucket_width", "must be positive"))
        elif (query.end - query.start) / query.bucket > MAX_BUCKETS:  # ranges are checked: no overflow here
            bad.append(FieldViolation("bucket_width", f"too small: at most {MAX_BUCKETS} buckets per query"))
    unknown = query.aggregates - AGGREGATES.keys() - {"count"}
    if unknown:
        bad.append(FieldViolation("aggregates", f"unknown aggregates {sorted(unknown)}"))
    if bad:
        raise InvalidRequest("invalid metrics query", field_violations=bad)


async def _fetch(pool: asyncpg.Pool, timeout_s: float, sql: str, *args: object) -> list[asyncpg.Record]:
    """One read in a read-only transaction under `statement_timeout` (PostgreSQL cancels it, SQLSTATE 57014)."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
        return list(await conn.fetch(sql, *args))


# `$n::text IS NULL` (every writer) or the one writer: both a plain condition on metric_series.
_WRITER = "({0}::text IS NULL OR s.caller = {0})"


async def query_metrics(pool: asyncpg.Pool, query: MetricQuery, *, timeout_s: float) -> list[Bucket]:
    """Non-empty buckets, oldest first."""
    check_query(query)
    wanted = [a for a in AGGREGATES if a in query.aggregates]
    columns = "".join(f", {AGGREGATES[a]} AS {a}" for a in wanted)
    sql = (
        f"SELECT date_bin($3::interval, m.time, $1) AS bucket, count(*) AS count{columns} "
        "FROM system_performance_metrics m WHERE m.time >= $1 AND m.time < $2 AND m.series_id IN "
        f"(SELECT series_id FROM metric_series s WHERE name = $4 AND labels @> $5::jsonb AND {_WRITER.format('$6')}) "
        "GROUP BY 1 ORDER BY 1"
    )
    width = query.bucket or (query.end - query.start)
    args = (query.start, query.end, width, query.name, json.dumps(query.labels), query.caller)
    with database_errors("query"):
        rows = await _fetch(pool, timeout_s, sql, *args)
    return [Bucket(r["bucket"], r["count"], {a: float(r[a]) for a in wanted}) for r in rows]


async def list_baselines(pool: asyncpg.Pool, name: str, caller: str | None, *, timeout_s: float) -> list[BaselineRow]:
    """Baselines of metric `name` (all metrics when empty) of `caller`'s series (None: anyone's)."""
    check_name(name, optional=True)
    with database_errors("list baselines"):
        rows = await _fetch(
            pool,
            timeout_s,
            "SELECT s.name, s.labels, b.mean, b.stddev, b.sample_count, b.window_start, b.window_end, "
            "b.computed_at, s.caller FROM performance_baselines b JOIN metric_series s USING (series_id) "
            f"WHERE ($1 = '' OR s.name = $1) AND {_WRITER.format('$3')} "
            "ORDER BY s.name, s.caller, s.labels::text LIMIT $2",
            name,
            MAX_PAGE_SIZE,
            caller,
        )
    return [BaselineRow(**{**dict(r), "labels": json.loads(r["labels"])}) for r in rows]


async def list_anomalies(
    pool: asyncpg.Pool, name: str, since: datetime, page_size: int, caller: str | None, *, timeout_s: float
) -> list[AnomalyRow]:
    """Anomalies at or after `since` of `caller`'s series (None: anyone's), newest first."""
    check_name(name, optional=True)
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidRequest(
            "invalid page_size", field_violations=[FieldViolation("page_size", f"must be 0-{MAX_PAGE_SIZE}")]
        )
    with database_errors("list anomalies"):
        rows = await _fetch(
            pool,
            timeout_s,
            "SELECT s.name, s.labels, a.value, a.baseline_mean, a.baseline_stddev, a.z_score, a.time, s.caller "
            "FROM performance_anomalies a JOIN metric_series s USING (series_id) "
            f"WHERE ($1 = '' OR s.name = $1) AND a.time >= $2 AND {_WRITER.format('$4')} "
            "ORDER BY a.time DESC, a.anomaly_id DESC LIMIT $3",
            name,
            since,
            page_size or DEFAULT_PAGE_SIZE,
            caller,
        )
    return [AnomalyRow(**{**dict(r), "labels": json.loads(r["labels"])}) for r in rows]
