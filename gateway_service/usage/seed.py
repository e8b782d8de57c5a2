"""Dollar budgets kept in memory start from the ledger: what each caller and user spent this UTC month and day.

A gateway with `limits.backend: memory` forgets its spend when it stops; Redis keeps it (limits/spend.py).
So at start-up, before it serves, a memory-backed gateway reads the ledger's spend of the current month,
grouped by caller, user and day (QueryUsage, through `query`), and adds it to the slots those budgets use:
every day of the month to the month's slots, today's to the day's too. The ledger is the source of truth,
a little behind at worst: records still in the schema-service sender (or a spool being replayed) of the
process before are not counted. A ledger that cannot be read within `timeout_s` leaves the budgets where
they were (at zero), logged, rather than hold up the start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from gateway_service.limits.spend import Spend, micro_usd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spent:
    """One group of the ledger: a caller's user's spend on one UTC day (YYYY-MM-DD)."""

    caller: str
    user_id: str
    day: str
    cost_usd: Decimal


Query = Callable[[datetime], AsyncIterator[Spent]]  # spend since the given time, every group


async def seed_spend(spend: Spend, query: Query, *, timeout_s: float, now: datetime | None = None) -> int:
    """Add the month's spend from the ledger to the budgets; how many groups were read (0 when it failed)."""
    now = now or datetime.now(UTC)
    try:
        async with asyncio.timeout(timeout_s):
            groups = [group async for group in query(datetime(now.year, now.month, 1, tzinfo=UTC))]
    except Exception as exc:  # a failed read costs the budgets their history, never the start
        log.warning("dollar budgets not seeded from the usage ledger", extra={"error": str(exc) or repr(exc)})
        return 0
    today = f"{now:%Y-%m-%d}"
    for group in groups:
        slots = [s for s in spend.slots(group.caller, group.user_id, now) if s.window == "month" or group.day == today]
        if slots and group.cost_usd > 0:
            await spend.store.add(slots, micro_usd(group.cost_usd))
    total = sum((g.cost_usd for g in groups), Decimal(0))
    log.info("dollar budgets seeded from the usage ledger", extra={"groups": len(groups), "usd": format(total, "f")})
    return len(groups)
