"""Reconciliation: the ledger's tokens beside the tokens the gateways counted in their own metrics.

Each gateway reports every attempt twice: as a usage record (the ledger, never dropped while its buffer and
spool have room) and as best-effort metric points (`llm.attempt.input_tokens`, `llm.attempt.output_tokens`,
labelled by provider and model). Over the same range the two should agree; the difference, ledger minus
metered, is the drift:

- positive: the metrics lost points (their buffer overflowed, or a batch expired) the ledger kept;
- negative: the ledger lacks records the gateways counted (dropped records, or a spool not yet replayed).

Input is compared as all input (full-rate, cached and cache-write tokens), output as all output (reasoning
included), the way the metrics count them. A ledger row is timed by its attempt's start and a metric point
by its end, so an attempt that straddles a range's edge shows as a few tokens of drift at that edge; the
periodic job compares whole past hours (`last_hour`), long after their attempts ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from schema_service.database import Conn
from schema_service.dberrors import database_errors
from schema_service.usage.ledger import LEDGER
from schema_service.usage.queries import UsageQuery

METERED_INPUT, METERED_OUTPUT = "llm.attempt.input_tokens", "llm.attempt.output_tokens"
_LEDGER_SQL = (
    "SELECT coalesce(sum(input_tokens + cached_input_tokens + cache_write_tokens), 0)::bigint AS input,"
    " coalesce(sum(output_tokens + reasoning_tokens), 0)::bigint AS output"
    f" FROM {LEDGER.parent} WHERE start_time >= $1 AND start_time < $2"
    " AND ($3::text IS NULL OR provider = $3) AND ($4::text IS NULL OR model = $4)"
)
_METERED_SQL = (
    "SELECT s.name, coalesce(sum(m.value), 0)::bigint AS tokens"
    " FROM metric_series s JOIN system_performance_metrics m USING (series_id)"
    " WHERE s.name = ANY($1::text[]) AND m.time >= $2 AND m.time < $3"
    " AND ($4::text IS NULL OR s.labels->>'provider' = $4) AND ($5::text IS NULL OR s.labels->>'model' = $5)"
    " GROUP BY s.name"
)


@dataclass(frozen=True)
class Reconciliation:
    """Tokens over one range: in the ledger, and as the gateways' metrics counted them."""

    ledger_input: int
    ledger_output: int
    metered_input: int
    metered_output: int

    @property
    def input_drift(self) -> int:
        return self.ledger_input - self.metered_input

    @property
    def output_drift(self) -> int:
        return self.ledger_output - self.metered_output


async def reconcile(
    conn: Conn, start: datetime, end: datetime, provider: str | None = None, model: str | None = None
) -> Reconciliation:
    """The ledger's and the metrics' tokens over [start, end), optionally for one provider and model."""
    ledger = await conn.fetchrow(_LEDGER_SQL, start, end, provider, model)
    rows = await conn.fetch(_METERED_SQL, [METERED_INPUT, METERED_OUTPUT], start, end, provider, model)
    metered = {r["name"]: int(r["tokens"]) for r in rows}
    assert ledger is not None  # an aggregate without GROUP BY always answers one row
    return Reconciliation(
        int(ledger["input"]), int(ledger["output"]), metered.get(METERED_INPUT, 0), metered.get(METERED_OUTPUT, 0)
    )


async def reconcile_query(pool: asyncpg.Pool, query: UsageQuery, *, timeout_s: float) -> Reconciliation | None:
    """The reconciliation over a QueryUsage's range and provider/model filters: on its first page, and only when
    the query neither filters nor groups by caller or user (metric points carry neither; and the gateways'
    start-up read of spend, grouped by both, does not wait on a scan of the metrics)."""
    by_who = {"caller", "user"} & (set(query.filters) | set(query.group_by))
    if query.offset or by_who:
        return None
    with database_errors("reconcile usage"):
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
            return await reconcile(
                conn, query.start, query.end, query.filters.get("provider"), query.filters.get("model")
            )


def last_hour(now: datetime) -> tuple[datetime, datetime]:
    """The last whole hour that ended at least a quarter of an hour ago (its attempts have long ended)."""
    end = (now - timedelta(minutes=15)).replace(minute=0, second=0, microsecond=0)
    return end - timedelta(hours=1), end
