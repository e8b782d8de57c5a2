"""Recent statistics per target (provider + model + key), for ListProviders, WatchProviders and the metrics.

    attempts, failures and failures by kind over the last 1, 5 and 60 minutes (10-second buckets, so a
        window's oldest edge is up to one bucket wide)
    time to first token p50 / p95, and output tokens per second (from the first token to the end), over
        the last `samples` successful attempts
    attempts in flight: admitted and not yet ended

Results whose failure was the request's fault count as successes, as in statistics.py: they say nothing of
the provider. A cancelled attempt (the caller went away) counts in flight only.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway_service.domain.failures import FailureKind
from gateway_service.health.statistics import percentile_ms
from gateway_service.health.target import Target

WINDOWS_S = (60, 300, 3600)
BUCKET_S = 10.0


@dataclass(frozen=True)
class WindowCounts:
    """One window's attempts: how many, how many failed, and failed by kind."""

    window_s: int
    requests: int
    failures: int
    errors: dict[FailureKind, int]

    @property
    def success_rate(self) -> float:
        """Successes over attempts; 0 for a window without attempts (see `requests`)."""
        return (self.requests - self.failures) / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class TargetStats:
    windows: tuple[WindowCounts, ...]  # WINDOWS_S in order
    ttft_p50_ms: float  # 0 before any first token
    ttft_p95_ms: float
    output_tokens_per_s: float  # 0 before any successful attempt with output
    in_flight: int
    last_failed: bool  # the latest attempt that ended with a verdict failed


@dataclass
class _Bucket:
    start: float
    requests: int = 0
    failures: int = 0
    errors: Counter[FailureKind] = field(default_factory=Counter)


@dataclass
class _Recent:
    buckets: deque[_Bucket] = field(default_factory=deque)
    ttfts: deque[float] = field(default_factory=deque)
    flows: deque[tuple[int, float]] = field(default_factory=deque)  # (output tokens, seconds after first token)
    in_flight: int = 0
    last_failed: bool = False


class Recent:
    """The recent statistics of every target this replica tried."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, samples: int = 200) -> None:
        self.clock = clock
        self.samples = max(1, samples)
        self._targets: dict[Target, _Recent] = {}

    def started(self, target: Target) -> None:
        self._of(target).in_flight += 1

    def cancelled(self, target: Target) -> None:
        recent = self._of(target)
        recent.in_flight = max(0, recent.in_flight - 1)

    def succeeded(self, target: Target, ttft_s: float | None, total_s: float, output_tokens: int = 0) -> None:
        recent = self._ended(target, None)
        if ttft_s is not None:
            recent.ttfts.append(ttft_s)
        flowing = total_s - (ttft_s or 0.0)
        if output_tokens > 0 and flowing > 0:
            recent.flows.append((output_tokens, flowing))

    def failed(self, target: Target, kind: FailureKind) -> None:
        self._ended(target, kind)

    def in_flight(self, target: Target) -> int:
        """Attempts of `target` admitted and not yet ended (cheap: the least_busy policy asks per candidate)."""
        recent = self._targets.get(target)
        return recent.in_flight if recent is not None else 0

    def stats(self, target: Target) -> TargetStats:
        recent = self._targets.get(target) or _Recent()
        now = self.clock()
        self._expire(recent, now)
        ttfts = sorted(recent.ttfts)
        tokens = sum(n for n, _ in recent.flows)
        seconds = sum(s for _, s in recent.flows)
        return TargetStats(
            windows=tuple(_window(recent.buckets, now, w) for w in WINDOWS_S),
            ttft_p50_ms=percentile_ms(ttfts, 50),
            ttft_p95_ms=percentile_ms(ttfts, 95),
            output_tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
            in_flight=recent.in_flight,
            last_failed=recent.last_failed,
        )

    def _ended(self, target: Target, kind: FailureKind | None) -> _Recent:
        recent = self._of(target)
        recent.in_flight = max(0, recent.in_flight - 1)
        recent.last_failed = kind is not None
        now = self.clock()
        start = now - now % BUCKET_S
        if not recent.buckets or recent.buckets[-1].start != start:
            recent.buckets.append(_Bucket(start))
            self._expire(recent, now)
        bucket = recent.buckets[-1]
        bucket.requests += 1
        if kind is not None:
            bucket.failures += 1
            bucket.errors[kind] += 1
        return recent

    def _of(self, target: Target) -> _Recent:
        recent = self._targets.get(target)
        if recent is None:
            recent = self._targets[target] = _Recent(ttfts=deque(maxlen=self.samples), flows=deque(maxlen=self.samples))
        return recent

    @staticmethod
    def _expire(recent: _Recent, now: float) -> None:
        horizon = now - WINDOWS_S[-1] - BUCKET_S
        while recent.buckets and recent.buckets[0].start < horizon:
            recent.buckets.popleft()


def _window(buckets: deque[_Bucket], now: float, window_s: int) -> WindowCounts:
    inside = [b for b in buckets if b.start > now - window_s - BUCKET_S]
    errors: Counter[FailureKind] = Counter()
    for bucket in inside:
        errors.update(bucket.errors)
    return WindowCounts(window_s, sum(b.requests for b in inside), sum(b.failures for b in inside), dict(errors))
