"""Rolling statistics per provider for ListProviders: the last `window` attempts and the latest error.

Results whose failure was the request's fault count as successes here: they say nothing of the provider.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    requests: int
    failures: int
    error_rate: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    latency_p50_ms: float
    latency_p95_ms: float


# One attempt: whether it went well, its time to first token (when one came) and its duration.
_Sample = tuple[bool, float | None, float]


class Statistics:
    def __init__(self, window: int) -> None:
        self.window = window
        self._samples: dict[str, deque[_Sample]] = {}
        self._last_error: dict[str, str] = {}

    def record(self, provider: str, ok: bool, ttft_s: float | None, total_s: float) -> None:
        samples = self._samples.setdefault(provider, deque())
        samples.append((ok, ttft_s, total_s))
        while len(samples) > self.window:
            samples.popleft()

    def failed(self, provider: str, error: str) -> None:
        self._last_error[provider] = error

    def last_error(self, provider: str) -> str:
        return self._last_error.get(provider, "")

    def last_failed(self, provider: str) -> bool:
        samples = self._samples.get(provider)
        return samples is not None and len(samples) > 0 and not samples[-1][0]

    def stats(self, provider: str) -> Stats:
        samples = list(self._samples.get(provider, ()))
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


def _pct(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0] * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000
