"""Rolling statistics per provider for ListProviders: the last `window` attempts and the latest error; and
decaying averages per provider + model of the time to first token and tokens per second, which the
lowest_latency routing policy ranks by (chat/policies.py).

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


DECAY = 0.2  # weight of the newest attempt in a decaying average: about the last ten attempts count


@dataclass(frozen=True)
class Speed:
    """Decaying averages of one provider + model's successful attempts (None until one was seen)."""

    ttft_s: float | None = None
    tokens_per_s: float | None = None  # output tokens over the time from the first token to the end

    def add(self, ttft_s: float | None, tokens_per_s: float | None) -> Speed:
        return Speed(_decayed(self.ttft_s, ttft_s), _decayed(self.tokens_per_s, tokens_per_s))


def _decayed(average: float | None, value: float | None) -> float | None:
    if value is None:
        return average
    return value if average is None else average + DECAY * (value - average)


def tokens_per_s(output_tokens: int, ttft_s: float | None, total_s: float) -> float | None:
    """An attempt's output rate once it flowed; None when it says nothing (no output, or no time to measure)."""
    flowing = total_s - (ttft_s or 0.0)
    return output_tokens / flowing if output_tokens > 0 and flowing > 0 else None


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
            ttft_p50_ms=percentile_ms(ttfts, 50),
            ttft_p95_ms=percentile_ms(ttfts, 95),
            latency_p50_ms=percentile_ms(totals, 50),
            latency_p95_ms=percentile_ms(totals, 95),
        )


def percentile_ms(values: list[float], q: int) -> float:
    """The q-th percentile of `values` (seconds) in milliseconds; 0 for none."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0] * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000
