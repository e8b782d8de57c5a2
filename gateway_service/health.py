"""Provider health: cooldowns per provider/model/key, circuit breakers, stall watch, rolling statistics.

Failover tells health when an attempt starts (`admit`, which returns its Ticket), when it sees a first
token and how it ended; the router asks here whether a candidate may be tried (`blocked`). Watchers
(WatchProviders) get the name of a provider whenever its health state changes.

Blocks are hard or soft. Hard: what a provider said itself: a Retry-After (429, or 503 with the header),
a billing failure (quota) or an auth failure; the candidate is never tried before it ends. Soft: the
gateway's own guess: an open breaker (gateway_service/breaker.py), a breaker's probe in flight, a
suspected stall (gateway_service/stalls.py), a 429 without Retry-After; a route whose candidates are all
blocked still tries the soft-blocked one whose block ends soonest (chat/skips.py `last_resort`), unless
it is suspected of stalling.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway_service.breaker import Admission, Breaker, BreakerSettings, Phase
from gateway_service.config import FailoverSettings
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.stalls import StallSettings, StallWatch

# Failures that say nothing about the provider's health: the request was at fault.
_REQUEST_FAULTS = (FailureKind.INVALID_REQUEST, FailureKind.CONTEXT_TOO_LONG, FailureKind.CONTENT_FILTERED)
_MISCONFIGURED = (FailureKind.AUTH_FAILED, FailureKind.QUOTA_EXHAUSTED)
# Failures whose Retry-After, when the provider sent one, is a hard block for that long.
_TOLD_TO_WAIT = (FailureKind.RATE_LIMITED, FailureKind.OVERLOADED, FailureKind.SERVER_ERROR)
ANY_MODEL = "*"


class HealthState(enum.Enum):
    UNCONFIGURED = "unconfigured"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    COOLING_DOWN = "cooling_down"
    UNHEALTHY = "unhealthy"
    MISCONFIGURED = "misconfigured"


@dataclass(frozen=True)
class Block:
    """Why a candidate may not be tried now, and until when (monotonic seconds).

    `kind` is the failure behind a cooldown, None for the breaker and the stall watch; `hard` blocks are
    never tried before `until`, soft ones may be tried as a last resort.
    """

    kind: FailureKind | None
    until: float
    hard: bool = False
    what: str = "circuit breaker open"
    stall: bool = False  # an attempt is stalled there now: a last resort would most likely wait it out too


@dataclass(eq=False)
class Ticket:
    """One attempt as health sees it, from `admit` to its result."""

    provider: str
    model: str
    key_id: str
    id: int
    admission: Admission
    started: float


@dataclass(frozen=True)
class Stats:
    requests: int
    failures: int
    error_rate: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    latency_p50_ms: float
    latency_p95_ms: float


@dataclass
class _Window:
    samples: deque[tuple[bool, float | None, float]] = field(default_factory=deque)


def _pct(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0] * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


class Health:
    def __init__(
        self,
        settings: FailoverSettings,
        clock: Callable[[], float] = time.monotonic,
        breaker: BreakerSettings | None = None,
        stalls: StallSettings | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.breaker_settings = breaker or BreakerSettings(
            consecutive=settings.breaker_failures,
            window_s=settings.breaker_window_s,
            min_requests=settings.breaker_min_requests,
            error_rate=settings.breaker_error_rate,
            first_open_s=settings.breaker_open_s,
            max_open_s=settings.breaker_max_open_s,
        )
        self.stall_settings = stalls or StallSettings(factor=settings.stall_factor, floor_s=settings.stall_floor_s)
        self._cooldowns: dict[tuple[str, str, str], Block] = {}
        self._breakers: dict[tuple[str, str], Breaker] = {}
        self._stalls: dict[tuple[str, str], StallWatch] = {}
        self._windows: dict[str, _Window] = {}
        self._last_error: dict[str, str] = {}
        self._watchers: set[asyncio.Queue[str]] = set()
        self._ids = itertools.count(1)

    def blocked(self, provider: str, model: str, key_id: str) -> Block | None:
        """The reason this candidate should be skipped now (hard blocks first), or None when it may be tried."""
        now = self.clock()
        soft: Block | None = None
        for scope in (model, ANY_MODEL):
            block = self._cooldowns.get((provider, scope, key_id))
            if block and block.until > now:
                if block.hard:
                    return block
                soft = block
        return soft or self._breaker_block(provider, model, now) or self._stall_block(provider, model, now)

    def _breaker_block(self, provider: str, model: str, now: float) -> Block | None:
        breaker = self._breakers.get((provider, model))
        if breaker is None:
            return None
        phase = breaker.phase(now)
        if phase is Phase.OPEN:
            assert breaker.open_until is not None
            return Block(None, breaker.open_until)
        if phase is Phase.HALF_OPEN and breaker.probe_until is not None:
            return Block(None, max(now, breaker.probe_until), what="circuit breaker half-open, its probe running")
        return None

    def _stall_block(self, provider: str, model: str, now: float) -> Block | None:
        watch = self._stalls.get((provider, model))
        suspect = watch.suspect(now) if watch is not None else None
        if suspect is None:
            return None
        what = f"suspected stall ({suspect.waited_s:.3f}s without a first token, usually {suspect.usual_s:.3f}s)"
        return Block(None, max(now, suspect.until), what=what, stall=True)

    def soonest_unblock(self, keys: list[tuple[str, str, str]]) -> float | None:
        """Seconds until the first of these candidates may be tried again, if any is blocked."""
        ends = [b.until for k in keys if (b := self.blocked(*k)) is not None]
        return max(0.0, min(ends) - self.clock()) if ends else None

    def admit(self, provider: str, model: str, key_id: str, patience_s: float) -> Ticket:
        """An attempt starts now and waits at most `patience_s` for its first token."""
        now = self.clock()
        breaker = self._breakers.setdefault((provider, model), Breaker(self.breaker_settings))
        ticket = Ticket(provider, model, key_id, next(self._ids), breaker.admit(now, patience_s), now)
        self._watch(provider, model).started(ticket.id, now, patience_s)
        return ticket

    def breaker_state(self, provider: str, model: str) -> tuple[int, Phase]:
        """The breaker's generation (it moves on each open and close) and phase, to tell whether it changed."""
        breaker = self._breakers.get((provider, model))
        return (breaker.generation, breaker.phase(self.clock())) if breaker is not None else (0, Phase.CLOSED)

    def first_token(self, ticket: Ticket) -> None:
        self._watch(ticket.provider, ticket.model).first_token(ticket.id, self.clock() - ticket.started)

    def record_success(self, ticket: Ticket, ttft_s: float | None, total_s: float) -> None:
        self._ended(ticket)
        self._breaker(ticket).succeeded(ticket.admission, self.clock())
        self._sample(ticket.provider, True, ttft_s, total_s)
        self._changed(ticket.provider)

    def record_cancelled(self, ticket: Ticket) -> None:
        self._ended(ticket)
        self._breaker(ticket).cancelled(ticket.admission)

    def record_failure(self, ticket: Ticket, error: ProviderError, total_s: float) -> None:
        self._ended(ticket)
        provider, model = ticket.provider, ticket.model
        if error.kind in _REQUEST_FAULTS:
            self._breaker(ticket).cancelled(ticket.admission)  # no verdict on the provider
            self._sample(provider, True, None, total_s)
            return
        self._last_error[provider] = f"{error.kind.value}: {error.message}"
        self._sample(provider, False, None, total_s)
        cooldown = self._cooldown_for(error)
        if cooldown is not None:
            scope = ANY_MODEL if error.kind in _MISCONFIGURED else model
            self._cooldowns[(provider, scope, ticket.key_id)] = cooldown
            self._breaker(ticket).cancelled(ticket.admission)
        else:
            self._breaker(ticket).failed(ticket.admission, self.clock())
        self._changed(provider)

    def _cooldown_for(self, error: ProviderError) -> Block | None:
        """The cooldown a failure starts; hard when the provider said how long (or the key is refused)."""
        now, kind, told = self.clock(), error.kind, error.retry_after_s
        if kind is FailureKind.QUOTA_EXHAUSTED:
            return Block(kind, now + max(told or 0.0, self.settings.quota_cooldown_s), hard=True)
        if kind is FailureKind.AUTH_FAILED:
            return Block(kind, now + self.settings.auth_cooldown_s, hard=True)
        if told is not None and kind in _TOLD_TO_WAIT:
            return Block(kind, now + told, hard=True)
        if kind is FailureKind.RATE_LIMITED:
            return Block(kind, now + self.settings.rate_limit_cooldown_s)
        return None

    def _breaker(self, ticket: Ticket) -> Breaker:
        return self._breakers.setdefault((ticket.provider, ticket.model), Breaker(self.breaker_settings))

    def _watch(self, provider: str, model: str) -> StallWatch:
        return self._stalls.setdefault((provider, model), StallWatch(self.stall_settings))

    def _ended(self, ticket: Ticket) -> None:
        self._watch(ticket.provider, ticket.model).ended(ticket.id)

    def _sample(self, provider: str, ok: bool, ttft_s: float | None, total_s: float) -> None:
        window = self._windows.setdefault(provider, _Window())
        window.samples.append((ok, ttft_s, total_s))
        while len(window.samples) > self.settings.stats_window:
            window.samples.popleft()

    def stats(self, provider: str) -> Stats:
        samples = list(self._windows.get(provider, _Window()).samples)
        failures = sum(1 for ok, _, _ in samples if not ok)
        ttfts = [t for _, t, _ in samples if t is not None]
        totals = [s for ok, _, s in samples if ok]
        return Stats(
            requests=len(samples),
            failures=failures,
            error_rate=failures / len(samples) if samples else 0.0,
            ttft_p50_ms=_pct(ttfts, 50),
            ttft_p95_ms=_pct(ttfts, 95),
            latency_p50_ms=_pct(totals, 50),
            latency_p95_ms=_pct(totals, 95),
        )

    def state(self, provider: str, models: list[str], key_id: str | None) -> tuple[HealthState, float | None]:
        """The provider's state and, when cooling down or open, the wall-clock end of it."""
        if key_id is None:
            return HealthState.UNCONFIGURED, None
        blocks = [b for m in models if (b := self.blocked(provider, m, key_id)) is not None]
        if blocks and len(blocks) == len(models):
            until = time.time() + min(b.until for b in blocks) - self.clock()
            if any(b.kind in _MISCONFIGURED for b in blocks):
                return HealthState.MISCONFIGURED, until
            if all(b.kind is None for b in blocks):
                return HealthState.UNHEALTHY, until
            return HealthState.COOLING_DOWN, until
        recent = list(self._windows.get(provider, _Window()).samples)[-10:]
        degraded = bool(blocks) or (bool(recent) and not recent[-1][0])
        return (HealthState.DEGRADED if degraded else HealthState.HEALTHY), None

    def last_error(self, provider: str) -> str:
        return self._last_error.get(provider, "")

    def watch(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)
        self._watchers.add(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[str]) -> None:
        self._watchers.discard(queue)

    def notify(self, provider: str) -> None:
        """Tell watchers of a change health does not track itself (a rate-limit budget ran out)."""
        self._changed(provider)

    def _changed(self, provider: str) -> None:
        for queue in self._watchers:
            if not queue.full():  # a watcher that does not read loses changes, never blocks a chat
                queue.put_nowait(provider)
