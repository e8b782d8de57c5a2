"""`schema-service usage`: the ledger's spend and tokens for a person at a terminal, as a table or as JSON.

    schema-service usage --by user --since 7d
    schema-service usage --by caller --by day --since 2026-12-01 --until 2026-12-08 --format json

The command reads the database directly (whoever holds its URL sees every caller's rows), through the same
query as UsageService/QueryUsage, every page of it.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta

import asyncpg

from schema_service.config import UsageSettings
from schema_service.usage.queries import DIMENSIONS, MAX_PAGE_SIZE, UsageQuery, UsageSum, query_usage

_AGO = re.compile(r"([0-9]{1,6})([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
COUNTS = (
    "attempts",
    "requests",
    "failed_attempts",
    "estimated_attempts",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


def when(text: str) -> datetime:
    """`7d`, `24h`, `30m`, `2w` ago, or an ISO date or time (UTC unless it says otherwise)."""
    if m := _AGO.fullmatch(text):
        return datetime.now(UTC) - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        message = f"{text!r}: give a span such as 7d, 24h, 30m, or a date like 2026-12-01"
        raise argparse.ArgumentTypeError(message) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def add_usage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--by",
        action="append",
        choices=list(DIMENSIONS),
        default=[],
        help="group by this (repeat for several; none gives one total)",
    )
    parser.add_argument("--since", type=when, default="7d", help="start: 7d, 24h, 30m ago, or a date (default 7d)")
    parser.add_argument("--until", type=when, help="end, exclusive (default now)")
    for name in ("caller", "user", "provider", "model"):
        parser.add_argument(f"--{name}", help=f"only this {name}'s rows")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output (default table)")


async def usage_report(pool: asyncpg.Pool, args: argparse.Namespace, settings: UsageSettings) -> str:
    """Every group of the query, as the chosen format."""
    filters = {d: getattr(args, d) for d in ("caller", "user", "provider", "model") if getattr(args, d)}
    end = args.until or datetime.now(UTC)
    query = UsageQuery(args.since, end, tuple(dict.fromkeys(args.by)), filters, MAX_PAGE_SIZE)
    groups: list[UsageSum] = []
    while True:
        page = await query_usage(pool, query, timeout_s=settings.query_timeout_s)
        groups += page.groups
        if page.next_offset is None:
            break
        query = UsageQuery(query.start, query.end, query.group_by, query.filters, MAX_PAGE_SIZE, page.next_offset)
    if args.format == "json":
        return json.dumps({"groups": [_json(g) for g in groups], "total": _json(page.total)}, indent=2)
    return table(query.group_by, groups, page.total)


def table(dims: tuple[str, ...], groups: list[UsageSum], total: UsageSum) -> str:
    header = [
        *dims,
        "attempts",
        "requests",
        "failed",
        "input",
        "cached",
        "cache_write",
        "output",
        "reasoning",
        "cost_usd",
    ]
    body = [[*(g.keys[d] or "-" for d in dims), *_cells(g)] for g in groups]
    body.append((["total", *[""] * (len(dims) - 1)] if dims else []) + _cells(total))
    rows = [header, *body]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(_line(row, widths, len(dims)) for row in rows)


def _line(row: list[str], widths: list[int], dims: int) -> str:
    return "  ".join(_pad(c, w, i < dims) for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()


def _pad(cell: str, width: int, left: bool) -> str:
    return cell.ljust(width) if left else cell.rjust(width)


def _cells(s: UsageSum) -> list[str]:
    counts = [s.attempts, s.requests, s.failed_attempts]
    tokens = [s.input_tokens, s.cached_input_tokens, s.cache_write_tokens, s.output_tokens, s.reasoning_tokens]
    return [f"{n:,}" for n in counts + tokens] + [_money(s)]


def _money(s: UsageSum) -> str:
    return format(s.cost_usd.normalize(), "f") if s.cost_usd else "0"


def _json(s: UsageSum) -> dict[str, object]:
    return {**s.keys, **{name: getattr(s, name) for name in COUNTS}, "cost_usd": _money(s)}
