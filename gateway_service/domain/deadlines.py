"""When one attempt's stream must show progress: the limits the pipeline sets and the adapter enforces.

Three limits bound an attempt: the first output by `first_token_by`, no gap longer than `idle_s`
between outputs after that, and the whole attempt by `end`. Output is what the caller gets: text, reasoning,
a tool call's pieces. A chunk that carries none (an empty delta, a ping, a usage-only chunk) is no progress,
so it neither starts nor resets the idle timer: an upstream sending only those is cut by `idle_s` as one
sending nothing is. The pipeline (chat/attempt.py) sets them
from the provider's timeouts and the caller's deadline split across candidates; the adapter's Pacer
(providers/streaming.py) is their one enforcer, around every await on the upstream.

Times are on the event loop's clock (`loop.time()`), the one asyncio's timers fire on: a deadline
taken from another clock (time.monotonic(), which uvloop's loop.time() is not) would drift from the
timer meant to enforce it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamDeadlines:
    first_token_by: float
    idle_s: float
    end: float
    first_token_limit: str  # what bounded the first output, for the TIMEOUT message ("30s", "this attempt's share")

    @classmethod
    def starting(
        cls, now: float, *, first_token_s: float, idle_s: float, total_s: float, first_token_limit: str = ""
    ) -> StreamDeadlines:
        """Limits for an attempt starting at loop time `now`."""
        return cls(
            first_token_by=now + first_token_s,
            idle_s=idle_s,
            end=now + max(0.0, total_s),
            first_token_limit=first_token_limit or f"{first_token_s:g}s",
        )

    def limit(self, idle_from: float | None) -> float:
        """The loop time the next await must finish by; `idle_from` is when the current gap between outputs
        began (None before the first output)."""
        return min(self.first_token_by if idle_from is None else idle_from + self.idle_s, self.end)

    def expired(self, limit: float, output_started: bool) -> str:
        """What a wait that ran out at `limit` was waiting for (only formatted when one did)."""
        if limit >= self.end:
            return "attempt deadline reached"
        if output_started:
            return f"no output for {self.idle_s:g}s (idle timeout)"
        return f"no first token within {self.first_token_limit}"
