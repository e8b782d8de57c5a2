"""Spend and tokens from the ledger, grouped by caller, user, provider, model and day, in pages.

The groups are ordered by cost (highest first), then by their dimensions, so pages are stable while
rows keep arriving for later times. A page token carries the offset and a digest of the query it
belongs to: a token used with another query is refused (INVALID_ARGUMENT), never silently applied.
Each query runs with a statement timeout (usage.query_timeout_s).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import asyncpg

from schema_service.dberrors import database_errors
from schema_service.errors import InvalidRequest
from schema_service.usage.ledger import LEDGER
from servicekit.errors import FieldViolation

# Dimension name -> SQL expression; the names are what QueryUsage and the CLI's --by take.
DIMENSIONS = {
    "caller": "caller",
    "user": "user_id",
    "provider": "provider",
    "model": "model",
    "day": "to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}
MAX_PAGE_SIZE = 1_000
DEFAULT_PAGE_SIZE = 100
_SUMS = """
    count(*) AS attempts,
    count(DISTINCT request_id) AS requests,
    count(*) FILTER (WHERE outcome = 'failed') AS failed_attempts,
    count(*) FILTER (WHERE estimated) AS estimated_attempts,
    coalesce(sum(input_tokens), 0) AS input_tokens,
    coalesce(sum(cached_input_tokens), 0) AS cached_input_tokens,
    coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
    coalesce(sum(output_tokens), 0) AS output_tokens,
    coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
    coalesce(sum(cost_usd), 0) AS cost_usd
"""


@dataclass(frozen=True)
class UsageQuery:
    """One query: a time range, filters (empty means any), the dimensions to group by, a page."""

    start: datetime
    end: datetime
    group_by: tuple[str, ...] = ()
    filters: dict[str, str] = field(default_factory=dict)  # dimension name -> value
    page_size: int = DEFAULT_PAGE_SIZE
    offset: int = 0
    open_end: bool = False  # no end_time was given: `end` is "now" of the first page, carried by the page token

    def digest(self) -> str:
        end = None if self.open_end else self.end.isoformat()
        key = [self.start.isoformat(), end, self.group_by, sorted(self.filters.items()), self.page_size]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class UsageSum:
    """The sums of one group (its dimension values in `keys`), or of everything selected."""

    keys: dict[str, str]
    attempts: int
    requests: int
    failed_attempts: int
    estimated_attempts: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal


@dataclass(frozen=True)
class UsagePage:
    groups: list[UsageSum]
    total: UsageSum
    group_count: int
    next_offset: int | None


def page_token(query: UsageQuery, offset: int) -> str:
    raw = json.dumps({"o": offset, "q": query.digest(), "e": query.end.isoformat()}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def at_page(query: UsageQuery, token: str) -> UsageQuery:
    """The query at the page a next_page_token of this same query points to; InvalidRequest for any other token.

    A query without end_time takes the first page's end from the token, so later pages count the same rows.
    """
    if not token:
        return query
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset, digest, end = int(data["o"]), str(data["q"]), datetime.fromisoformat(data["e"])
    except (ValueError, TypeError, KeyError, binascii.Error):
        offset, digest, end = -1, "", query.end
    if offset < 0 or digest != query.digest():
        raise InvalidRequest(
            "page_token does not belong to this query",
            field_violations=[FieldViolation("page_token", "is not a next_page_token of the same query")],
        )
    return dataclasses.replace(query, offset=offset, end=end if query.open_end else query.end)


async def query_usage(pool: asyncpg.Pool, query: UsageQuery, *, timeout_s: float) -> UsagePage:
    """One page of groups and the totals over everything the query selects."""
    where, args = _where(query)
    dims = [DIMENSIONS[d] for d in query.group_by]
    keys = ", ".join(f"{sql} AS {name}" for name, sql in zip(query.group_by, dims, strict=True))
    order = ", ".join(["cost_usd DESC", *dims])
    grouped = (
        f"SELECT {keys + ',' if keys else ''} {_SUMS}, count(*) OVER () AS group_count FROM {LEDGER.parent} "
        f"WHERE {where} {'GROUP BY ' + ', '.join(dims) if dims else ''} ORDER BY {order} "
        f"LIMIT {query.page_size} OFFSET {query.offset}"
    )
    total_sql = f"SELECT {_SUMS} FROM {LEDGER.parent} WHERE {where}"
    with database_errors("query usage"):
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
            rows = await conn.fetch(grouped, *args)
            total = await conn.fetchrow(total_sql, *args)
    count = rows[0]["group_count"] if rows else 0
    if not dims:
        count = 1 if total is not None and total["attempts"] else 0
    more = query.offset + len(rows) < count
    return UsagePage(
        [_sum(r, query.group_by) for r in rows if r["attempts"]],
        _sum(total, ()),
        count,
        query.offset + len(rows) if more else None,
    )


def _where(query: UsageQuery) -> tuple[str, list[object]]:
    clauses = ["start_time >= $1", "start_time < $2"]
    args: list[object] = [query.start, query.end]
    for name, value in sorted(query.filters.items()):
        args.append(value)
        clauses.append(f"{DIMENSIONS[name]} = ${len(args)}")
    return " AND ".join(clauses), args


def _sum(row: asyncpg.Record | None, group_by: tuple[str, ...]) -> UsageSum:
    if row is None:
        return UsageSum({}, 0, 0, 0, 0, 0, 0, 0, 0, 0, Decimal(0))
    return UsageSum(
        keys={name: row[name] for name in group_by},
        attempts=int(row["attempts"]),
        requests=int(row["requests"]),
        failed_attempts=int(row["failed_attempts"]),
        estimated_attempts=int(row["estimated_attempts"]),
        input_tokens=int(row["input_tokens"]),
        cached_input_tokens=int(row["cached_input_tokens"]),
        cache_write_tokens=int(row["cache_write_tokens"]),
        output_tokens=int(row["output_tokens"]),
        reasoning_tokens=int(row["reasoning_tokens"]),
        cost_usd=Decimal(row["cost_usd"]),
    )
