"""The budgets' TATs in a dict: one process, no I/O (each replica gets the whole budget)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from gateway_service.limits.core import Charge, Clock, Exceeded, adjust, admit


class MemoryLimiter:
    """Budgets of this process only (each replica gets the whole budget)."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}
        self._sweep_at = 1024

    async def acquire(self, charges: Sequence[Charge], then: Sequence[Charge] = ()) -> list[Exceeded]:
        return self.acquire_now(charges, then)

    def acquire_now(self, charges: Sequence[Charge], then: Sequence[Charge] = ()) -> list[Exceeded]:
        now = self.clock()
        for group in (charges, then):
            results = [admit(self._tat.get(slot.key, 0.0), now, cost, slot.rate) for slot, cost in group]
            exceeded = [Exceeded(slot, wait) for (slot, _), (_, wait) in zip(group, results, strict=True) if wait]
            if exceeded:
                return exceeded
            for (slot, _), (new, _) in zip(group, results, strict=True):
                self._tat[slot.key] = new
        if len(self._tat) >= self._sweep_at:
            self._sweep(now)
        return []

    def settle(self, charges: Sequence[Charge]) -> None:
        now = self.clock()
        for slot, delta in charges:
            self._tat[slot.key] = adjust(self._tat.get(slot.key, 0.0), now, delta, slot.rate)

    def _sweep(self, now: float) -> None:
        # A full bucket is the same as no entry: forget them, so one-off user_ids do not pile up.
        self._tat = {key: tat for key, tat in self._tat.items() if tat > now}
        self._sweep_at = max(1024, 2 * len(self._tat))

    async def aclose(self) -> None:
        return None
