"""Rate-limit budgets: provider, model and caller (user_id) rates, kept in process or in Redis.

Each rate is a token bucket of `limit` units refilled evenly over its window, stored the GCRA way
as one number per rate: the "theoretical arrival time" (TAT) at which the bucket is full again.
Taking `cost` units moves the TAT forward by cost * window / limit; it is refused while the TAT
would end up more than one window ahead of now, and the refusal says how long until it would not.
One number per rate makes an all-or-nothing take of several rates a single atomic Redis script, a
refund (or a charge for tokens used beyond the estimate) a plain move of the TAT, and every key
expires by itself when its bucket is full.

    Budgets          config -> slots (one per subject and rate), take / settle, exhaustion for ListProviders
    MemoryLimiter    the TATs in a dict: one process, no I/O
    RedisLimiter     (redis_limiter) the TATs in Redis: shared by every replica, fails open

What happens to the budgets is counted through `Count` (Telemetry.count, metrics to the schema service):
`llm.limits.fail_open` (a call let through unbudgeted, Redis unreachable), `llm.limits.settle_failed`
(usage not recorded in Redis), `llm.limits.candidate_skipped` {provider, model} and
`llm.limits.user_refused` {limits}. Never a user_id (callers choose them freely) and never the Redis URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway_service.config import Budget, GatewayConfig
from gateway_service.errors import UserBudgetExhausted
from gateway_service.limits.core import (
    Charge,
    Count,
    Exceeded,
    Hold,
    Limiter,
    Slot,
    Taken,
    no_count,
)
from servicekit.errors import QuotaViolation


def has_budgets(config: GatewayConfig) -> bool:
    settings = config.limits
    return bool(
        settings.users
        or settings.user_overrides
        or any(p.limits or any(m.limits for m in p.models) for p in config.providers)
    )


class Budgets:
    """The configured budgets over one limiter; built only when some budget is configured."""

    def __init__(
        self,
        config: GatewayConfig,
        limiter: Limiter,
        on_exhausted: Callable[[str], None] | None = None,
        count: Count = no_count,
    ) -> None:
        self.settings = config.limits
        self.limiter = limiter
        self.on_exhausted = on_exhausted
        self.count = count
        prefix = config.limits.key_prefix
        self._candidates: dict[tuple[str, str], tuple[Slot, ...]] = {}
        for p in config.providers:
            own = _slots(f"provider:{p.name}", f"{prefix}:{{{p.name}}}:provider", p.limits)
            for m in p.models:
                # The model's keys share the provider's hash tag, so one Redis Cluster slot holds them all.
                model = _slots(f"model:{p.name}/{m.name}", f"{prefix}:{{{p.name}}}:model:{m.name}", m.limits)
                self._candidates[(p.name, m.name)] = own + model
        self._exhausted: dict[tuple[str, str], float] = {}  # (provider, model) -> wall-clock end, seen here
        self.limits_users = bool(self.settings.users or self.settings.user_overrides)

    def candidate_slots(self, provider: str, model: str) -> tuple[Slot, ...]:
        return self._candidates.get((provider, model), ())

    def user_slots(self, user_id: str, caller: str = "") -> tuple[Slot, ...]:
        """The user's rates; a caller's `alice` is not another caller's (caller names never hold a `/`)."""
        budget = self.settings.user_budget(user_id)
        user = f"{caller}/{user_id}" if caller else user_id
        return _slots(f"user:{user}", f"{self.settings.key_prefix}:user:{{{user}}}", budget)

    async def take(self, slots: tuple[Slot, ...], tokens: int, then: tuple[Slot, ...] = ()) -> Taken:
        """One request and `tokens` (an estimate) from every slot or none; then the same from `then`."""
        exceeded = await self.limiter.acquire(_charges(slots, tokens), _charges(then, tokens))
        if any(e.slot in slots for e in exceeded):
            if any(s.subject.startswith("user:") for s in slots):
                self.count("llm.limits.user_refused", {"limits": ",".join(e.slot.rate.name for e in exceeded)})
            return Taken(None, None, exceeded)
        then_hold = None if exceeded else Hold(tuple(s for s in then if s.rate.counts_tokens), tokens)
        return Taken(Hold(tuple(s for s in slots if s.rate.counts_tokens), tokens), then_hold, exceeded)

    def settle(self, hold: Hold, used_tokens: int) -> None:
        """Square the estimate with what was really used (given back when less)."""
        delta = used_tokens - hold.tokens
        if delta and hold.token_slots:
            self.limiter.settle([(slot, float(delta)) for slot in hold.token_slots])

    def note_exhausted(self, provider: str, model: str, exceeded: list[Exceeded]) -> None:
        """Remember a refused candidate for ListProviders; watchers hear of it when it is new."""
        self.count("llm.limits.candidate_skipped", {"provider": provider, "model": model})
        now = time.time()
        fresh = self._exhausted.get((provider, model), 0.0) <= now
        self._exhausted[(provider, model)] = now + max(e.retry_after_s for e in exceeded)
        if fresh and self.on_exhausted is not None:
            self.on_exhausted(provider)

    def exhausted_until(self, provider: str, model: str) -> float | None:
        """Wall-clock end of the budget exhaustion this replica last saw for the candidate, if not over."""
        until = self._exhausted.get((provider, model))
        return until if until is not None and until > time.time() else None

    async def aclose(self) -> None:
        await self.limiter.aclose()


def _charges(slots: tuple[Slot, ...], tokens: int) -> list[Charge]:
    return [(s, float(tokens) if s.rate.counts_tokens else 1.0) for s in slots]


def _slots(subject: str, key: str, budget: Budget) -> tuple[Slot, ...]:
    return tuple(Slot(subject, rate, f"{key}:{rate.name}") for rate in budget)


def describe(exceeded: Sequence[Exceeded]) -> str:
    return "; ".join(f"{e.slot.subject} {e.describe()}" for e in exceeded)


def user_budget_exhausted(user_id: str, exceeded: Sequence[Exceeded]) -> UserBudgetExhausted:
    """RESOURCE_EXHAUSTED naming the user and each exceeded rate, with RetryInfo for when all have room."""
    who = user_id or "(no user_id)"
    return UserBudgetExhausted(
        f"user {who!r} is over budget: {describe(exceeded)}",
        metadata={"user_id": user_id, "limits": ",".join(e.slot.rate.name for e in exceeded)},
        retry_after_s=max(e.retry_after_s for e in exceeded),
        quota_violations=[QuotaViolation(f"user:{user_id}", e.describe()) for e in exceeded],
    )
