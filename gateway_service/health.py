"""Provider health: cooldowns per provider/model/key, circuit breakers, rolling statistics.

Failover records every attempt here; the router asks here whether a candidate may be tried.
Watchers (WatchProviders) get the name of a provider whenever its health state changes.
"""

from __future__ import annotations

import asyncio
import enum
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway_service.config import FailoverSettings
from gateway_service.domain.failures import FailureKind, ProviderError

# Failures that say nothing about the provider's health: the request was at fault.
_REQUEST_FAULTS = (FailureKind.INVALID_REQUEST, FailureKind.CONTEXT_TOO_LONG, FailureKind.CONTENT_FILTERED)
_MISCONFIGURED = (FailureKind.AUTH_FAILED, FailureKind.QUOTA_EXHAUSTED)
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
    """Why a candidate may not be tried now, and until when (monotonic seconds)."""

    kind: FailureKind | None  # None: breaker open
    until: float


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float = 0.0


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
    def __init__(self, settings: FailoverSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._cooldowns: dict[tuple[str, str, str], Block] = {}
        self._breakers: dict[tuple[str, str], _Breaker] = {}
        self._windows: dict[str, _Window] = {}
        self._last_error: dict[str, str] = {}
        self._watchers: set[asyncio.Queue[str]] = set()

    def blocked(self, provider: str, model: str, key_id: str) -> Block | None:
        """The reason this candidate must be skipped now, or None when it may be tried."""
        now = self.clock()
        for scope in (model, ANY_MODEL):
            block = self._cooldowns.get((provider, scope, key_id))
            if block and block.until > now:
                return block
        breaker = self._breakers.get((provider, model))
        if breaker and breaker.open_until > now:
            return Block(None, breaker.open_until)
        return None

    def soonest_unblock(self, keys: list[tuple[str, str, str]]) -> float | None:
        """Seconds until the first of these candidates may be tried again, if any is blocked."""
        ends = [b.until for k in keys if (b := self.blocked(*k)) is not None]
        return max(0.0, min(ends) - self.clock()) if ends else None

    def record_success(self, provider: str, model: str, ttft_s: float | None, total_s: float) -> None:
        self._breakers.pop((provider, model), None)
        self._sample(provider, True, ttft_s, total_s)
        self._changed(provider)

    def record_failure(self, provider: str, model: str, key_id: str, error: ProviderError, total_s: float) -> None:
        if error.kind in _REQUEST_FAULTS:
            self._sample(provider, True, None, total_s)
            return
        self._last_error[provider] = f"{error.kind.value}: {error.message}"
        self._sample(provider, False, None, total_s)
        cooldown = self._cooldown_for(error)
        if cooldown is not None:
            scope = ANY_MODEL if error.kind in _MISCONFIGURED else model
            self._cooldowns[(provider, scope, key_id)] = Block(error.kind, self.clock() + cooldown)
        else:
            self._trip(provider, model)
        self._changed(provider)

    def _cooldown_for(self, error: ProviderError) -> float | None:
        if error.kind is FailureKind.RATE_LIMITED:
            return error.retry_after_s if error.retry_after_s is not None else self.settings.rate_limit_cooldown_s
        if error.kind is FailureKind.QUOTA_EXHAUSTED:
            return max(error.retry_after_s or 0.0, self.settings.quota_cooldown_s)
        if error.kind is FailureKind.AUTH_FAILED:
            return self.settings.auth_cooldown_s
        return None

    def _trip(self, provider: str, model: str) -> None:
        breaker = self._breakers.setdefault((provider, model), _Breaker())
        breaker.failures += 1
        # Once open, a single failure of the half-open trial re-opens it.
        if breaker.failures >= self.settings.breaker_failures:
            breaker.open_until = self.clock() + self.settings.breaker_open_s

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
