"""Per-caller request rates: the `limits:` of an entry in the callers file, on the budgets' limiter.

Each call of a caller with limits takes one request from each of its rates (in this process, or in
Redis shared by every replica, like the other budgets); a refusal says how long until there is room,
which servicekit.auth answers as RESOURCE_EXHAUSTED (CALLER_RATE_LIMITED) with RetryInfo.
"""

from __future__ import annotations

from gateway_service.config.limits import WINDOWS, Rate
from gateway_service.limits.core import Count, Limiter, Slot, no_count
from servicekit.callers import Caller


class CallerRates:
    def __init__(self, limiter: Limiter, key_prefix: str, count: Count = no_count) -> None:
        self.limiter = limiter
        self.key_prefix = key_prefix
        self.count = count
        # By caller and limits (a reloaded file may change them).
        self._slots: dict[tuple[str, tuple[tuple[str, int], ...]], tuple[Slot, ...]] = {}

    def slots(self, caller: Caller) -> tuple[Slot, ...]:
        cache_key = (caller.name, tuple(sorted(caller.limits.items())))
        slots = self._slots.get(cache_key)
        if slots is None:
            if len(self._slots) > 4096:  # limits of old file versions: rebuilt on demand
                self._slots.clear()
            slots = self._slots[cache_key] = tuple(
                Slot(
                    f"caller:{caller.name}",
                    Rate(name, limit, WINDOWS[name.rpartition("_per_")[2]]),
                    f"{self.key_prefix}:caller:{{{caller.name}}}:{name}",
                )
                for name, limit in sorted(caller.limits.items())
            )
        return slots

    async def admit(self, caller: Caller) -> float | None:
        """None when the call is within every rate of its caller, else the seconds until it would be."""
        slots = self.slots(caller)
        if not slots:
            return None
        exceeded = await self.limiter.acquire([(slot, 1.0) for slot in slots])
        if not exceeded:
            return None
        self.count("llm.limits.caller_refused", {"caller": caller.name})
        return max(e.retry_after_s for e in exceeded)
