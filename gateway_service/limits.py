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
    RedisLimiter     (limits_redis) the TATs in Redis: shared by every replica, fails open

What happens to the budgets is counted through `Count` (Telemetry.count, metrics to the schema service):
`llm.limits.fail_open` (a call let through unbudgeted, Redis unreachable), `llm.limits.settle_failed`
(usage not recorded in Redis), `llm.limits.candidate_skipped` {provider, model} and
`llm.limits.user_refused` {limits}. Never a user_id (callers choose them freely) and never the Redis URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway_service.config import GatewayConfig
from gateway_service.config_limits import Budget, LimitSettings, Rate
from gateway_service.errors import UserBudgetExhausted
from servicekit.errors import QuotaViolation

Clock = Callable[[], float]
Count = Callable[[str, Mapping[str, str]], None]  # one more of a named, labelled event (Telemetry.count)


def no_count(name: str, labels: Mapping[str, str]) -> None:
    """The Count of a limiter nobody reads the counts of (tests, no telemetry)."""


@dataclass(frozen=True)
class Slot:
    """One rate of one subject (`provider:openai`, `model:openai/gpt-4o`, `user:alice`) and its storage key."""

    subject: str
    rate: Rate
    key: str


Charge = tuple[Slot, float]  # a slot and the units to take (or, when settling, to add back or take more)


@dataclass(frozen=True)
class Exceeded:
    """A slot that cannot give what was asked, and how long until it can."""

    slot: Slot
    retry_after_s: float

    def describe(self) -> str:
        return f"{self.slot.rate.name} budget of {self.slot.rate.limit} used up; frees in {self.retry_after_s:.3f}s"


@dataclass(frozen=True)
class Hold:
    """Budget taken for an attempt (or a call): `tokens` were estimated; settle() squares them with usage."""

    token_slots: tuple[Slot, ...]
    tokens: int


@dataclass(frozen=True)
class Taken:
    """What one take got: nothing when `first` was refused; `then` only when both had room."""

    first: Hold | None
    then: Hold | None
    exceeded: list[Exceeded]


class Limiter(Protocol):
    async def acquire(self, charges: Sequence[Charge], then: Sequence[Charge] = ()) -> list[Exceeded]:
        """Take every charge or none; once they are taken, every one of `then` or none of those.

        The exceeded slots say what was refused: any of `charges` means nothing was taken. Two groups
        in one call let a request's user and first candidate cost one Redis round trip, not two.
        """
        ...

    def settle(self, charges: Sequence[Charge]) -> None:
        """Add (or give back, when negative) units; never blocks the caller."""
        ...

    async def aclose(self) -> None: ...


def admit(tat: float, now: float, cost: float, rate: Rate) -> tuple[float, float]:
    """(the new TAT, 0.0) when the bucket holds `cost`, else (the unchanged TAT, seconds until it will)."""
    base = max(tat, now)
    new = base + cost * rate.window_s / rate.limit
    wait = new - rate.window_s - now
    # A full bucket lets even a request larger than the whole budget through; it then owes the excess.
    if wait <= 0 or base <= now:
        return new, 0.0
    return tat, wait


def adjust(tat: float, now: float, delta: float, rate: Rate) -> float:
    """The TAT after `delta` more units were used (fewer when negative); never beyond a full bucket."""
    return max(max(tat, now) + delta * rate.window_s / rate.limit, now)


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


def build_limiter(settings: LimitSettings, clock: Clock | None = None, count: Count = no_count) -> Limiter:
    if settings.backend == "redis":
        from gateway_service.limits_redis import RedisLimiter

        assert settings.redis_url is not None  # config requires it with backend: redis
        return RedisLimiter(
            settings.redis_url.reveal(),
            timeout_s=settings.redis_timeout_ms / 1000,
            retry_s=settings.redis_retry_s,
            clock=clock or time.time,
            count=count,
        )
    return MemoryLimiter(clock or time.monotonic)


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
        self, config: GatewayConfig, limiter: Limiter, on_exhausted: Callable[[str], None] | None = None,
        count: Count = no_count,
    ) -> None:  # fmt: skip
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

    def user_slots(self, user_id: str) -> tuple[Slot, ...]:
        budget = self.settings.user_budget(user_id)
        return _slots(f"user:{user_id}", f"{self.settings.key_prefix}:user:{{{user_id}}}", budget)

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
