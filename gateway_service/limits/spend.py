"""Dollar budgets: what each caller and each user has spent today and this month, reserved before an attempt.

Amounts are integer micro-dollars (a reservation rounds its estimate up, a settlement the real cost up), so
Redis adds them exactly with INCRBY and never a float. One key per subject and window
(`{prefix}:spend:caller:web:day:20261207`), expiring a day after its window ends.

    reserve   before an attempt: every slot of the call (the caller's and the user's, day and month) takes
              the estimate, or none does. Atomic (one Lua script in Redis, one synchronous step in memory), so
              concurrent requests cannot all see the same room: the sum of what is reserved never passes a
              limit, and a budget is overspent at most by what one attempt costs beyond its reservation.
    settle    after the attempt: the reservation is replaced by the real cost (given back when it cost less).

Redis unreachable: `on_backend_error: deny` (the default) refuses the call (UNAVAILABLE + RetryInfo); `allow`
lets it run unbudgeted. Either way it is logged (at most once a `retry_s`) and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Protocol

from gateway_service.config import LimitSettings, SpendLimits
from gateway_service.limits.core import Count, no_count

log = logging.getLogger(__name__)

MICRO = Decimal("0.000001")


def micro_usd(amount: Decimal) -> int:
    """Dollars as integer micro-dollars, rounded up: a budget never counts less than was spent."""
    return int((amount / MICRO).to_integral_value(rounding=ROUND_CEILING))


@dataclass(frozen=True)
class SpendSlot:
    """One dollar limit of one subject in one window, and its storage key."""

    subject: str  # caller:web, user:web:alice
    window: str  # day, month
    limit_micro: int
    resets_at: datetime
    key: str

    @property
    def limit_usd(self) -> Decimal:
        return Decimal(self.limit_micro) * MICRO

    def describe(self, spent_micro: int) -> str:
        spent = Decimal(spent_micro) * MICRO
        return (
            f"{self.subject} spent ${spent:.6f} of ${self.limit_usd:.2f} per {self.window}; "
            f"resets {self.resets_at:%Y-%m-%dT%H:%M:%SZ}"
        )


@dataclass(frozen=True)
class Refused:
    """A slot without room for the reservation, and what it had spent."""

    slot: SpendSlot
    spent_micro: int


class BackendDown(Exception):
    """The store could not be reached."""


class SpendStore(Protocol):
    async def reserve(self, slots: Sequence[SpendSlot], amount: int) -> list[Refused]:
        """Take `amount` on every slot, or on none and say which had no room."""
        ...

    async def add(self, slots: Sequence[SpendSlot], delta: int) -> None:
        """Add (or, negative, give back) `delta` on every slot; no limit is checked."""
        ...

    async def aclose(self) -> None: ...


def windows(now: datetime) -> dict[str, tuple[str, datetime, datetime]]:
    """window -> (id, end, key expiry) for the UTC day and month of `now`."""
    day_end = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    month_end = (datetime(now.year, now.month, 1, tzinfo=UTC) + timedelta(days=32)).replace(day=1)
    return {
        "day": (f"{now:%Y%m%d}", day_end, day_end + timedelta(days=1)),
        "month": (f"{now:%Y%m}", month_end, month_end + timedelta(days=1)),
    }


def slots_for(subject: str, limits: SpendLimits, prefix: str, now: datetime) -> list[SpendSlot]:
    out = []
    for window, (window_id, end, _) in windows(now).items():
        limit = limits.usd_per_day if window == "day" else limits.usd_per_month
        if limit is not None:
            key = f"{prefix}:spend:{subject}:{window}:{window_id}"
            out.append(SpendSlot(subject, window, micro_usd(limit), end, key))
    return out


class MemorySpendStore:
    """Spend of this process only (each replica gets the whole budget); forgets ended windows."""

    def __init__(self) -> None:
        self._spent: dict[str, int] = {}
        self._ends: dict[str, datetime] = {}

    async def reserve(self, slots: Sequence[SpendSlot], amount: int) -> list[Refused]:
        self._forget_ended(datetime.now(UTC))
        refused = [
            Refused(s, self._spent.get(s.key, 0)) for s in slots if self._spent.get(s.key, 0) + amount > s.limit_micro
        ]
        if not refused:
            await self.add(slots, amount)
        return refused

    async def add(self, slots: Sequence[SpendSlot], delta: int) -> None:
        for s in slots:
            self._spent[s.key] = self._spent.get(s.key, 0) + delta
            self._ends[s.key] = s.resets_at

    def _forget_ended(self, now: datetime) -> None:
        if len(self._ends) > 4096:
            ended = [key for key, end in self._ends.items() if end <= now]
            for key in ended:
                self._spent.pop(key, None), self._ends.pop(key, None)

    async def aclose(self) -> None:
        return None


class Spend:
    """Config -> slots of a call; reserve and settle through the store; refusals counted, outages logged."""

    def __init__(self, settings: LimitSettings, store: SpendStore, count: Count = no_count) -> None:
        self.settings = settings.spend
        self.prefix = settings.key_prefix
        self.store = store
        self.count = count
        self._logged_at = float("-inf")
        self._settling: set[asyncio.Task[None]] = set()

    def slots(self, caller: str, user_id: str, now: datetime | None = None) -> list[SpendSlot]:
        now = now or datetime.now(UTC)
        caller_slots = slots_for(f"caller:{caller}", self.settings.caller_limits(caller), self.prefix, now)
        user_slots = slots_for(f"user:{caller}:{user_id}", self.settings.user_limits(user_id), self.prefix, now)
        return caller_slots + (user_slots if user_id or "" in self.settings.user_overrides else [])

    async def reserve(self, slots: Sequence[SpendSlot], amount: int) -> list[Refused] | None:
        """The refused slots ([] when reserved), or None when the store is down and the call may run unbudgeted
        (on_backend_error: allow). Raises BackendDown when it is down and the call may not (deny)."""
        try:
            refused = await self.store.reserve(slots, amount)
        except BackendDown as exc:
            self._down(exc)
            if self.settings.on_backend_error == "deny":
                raise
            return None
        if refused:
            self.count("llm.spend.refused", {"windows": ",".join(sorted({r.slot.window for r in refused}))})
        return refused

    def settle(self, slots: Sequence[SpendSlot], delta: int) -> None:
        """Square a reservation with the real cost, off the request path."""
        if not delta or not slots:
            return
        task = asyncio.get_running_loop().create_task(self._settle_now(slots, delta))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle_now(self, slots: Sequence[SpendSlot], delta: int) -> None:
        try:
            await self.store.add(slots, delta)
        except BackendDown as exc:
            self.count("llm.spend.settle_failed", {})
            self._down(exc)

    def _down(self, exc: BackendDown) -> None:
        self.count("llm.spend.backend_error", {"on_error": self.settings.on_backend_error})
        now = asyncio.get_running_loop().time()
        if now - self._logged_at >= 10.0:
            self._logged_at = now
            verdict = "calls are refused" if self.settings.on_backend_error == "deny" else "calls run unbudgeted"
            log.warning(f"dollar budgets unavailable (Redis unreachable); {verdict}", extra={"error": str(exc)})

    async def aclose(self) -> None:
        if self._settling:
            await asyncio.wait(self._settling, timeout=1.0)
        await self.store.aclose()
