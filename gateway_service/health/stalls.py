"""Stalls seen early: a provider/model whose attempt waits for its first token far longer than usual.

Each attempt is watched from its start until its first token (or its end). While the oldest such
attempt has waited more than max(`factor` x p90 of the recent times to first token, `floor_s`), the
provider/model is suspect: new attempts skip it (advice, like an open breaker), so callers stop queuing
behind a stalled upstream long before that attempt's own first-token timeout ends. The suspicion lasts
until an attempt sees a first token, or the waiting one ends.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class StallSettings:
    """The stall threshold; factor and floor come from the config (health/settings.py)."""

    factor: float  # how many times the usual (p90) time to first token counts as a stall
    floor_s: float  # never suspect a wait shorter than this
    min_samples: int = 5  # first tokens seen before "usual" means anything (not configurable)
    samples: int = 50  # recent times to first token kept (not configurable)


@dataclass(frozen=True)
class Suspect:
    waited_s: float
    usual_s: float  # p90 of recent times to first token
    until: float  # when the waiting attempt gives up (its first-token timeout)


class StallWatch:
    """Attempts of one provider/model waiting for a first token, and recent times to first token."""

    def __init__(self, settings: StallSettings) -> None:
        self.settings = settings
        self._ttfts: deque[float] = deque(maxlen=settings.samples)
        self._waiting: dict[int, tuple[float, float]] = {}  # attempt id -> (started, gives up at)

    def started(self, attempt: int, now: float, patience_s: float) -> None:
        self._waiting[attempt] = (now, now + patience_s)

    def first_token(self, attempt: int, ttft_s: float) -> None:
        if self._waiting.pop(attempt, None) is not None:
            self._ttfts.append(ttft_s)

    def ended(self, attempt: int) -> None:
        self._waiting.pop(attempt, None)

    def suspect(self, now: float) -> Suspect | None:
        """Whether the oldest waiting attempt has waited past the stall threshold (cheap when none has)."""
        if not self._waiting or len(self._ttfts) < self.settings.min_samples:
            return None
        started, gives_up = next(iter(self._waiting.values()))  # dicts keep insertion order: the oldest first
        waited = now - started
        if waited <= self.settings.floor_s:
            return None
        usual = self.usual_s()
        if waited <= max(self.settings.factor * usual, self.settings.floor_s):
            return None
        return Suspect(waited, usual, gives_up)

    def usual_s(self) -> float:
        ordered = sorted(self._ttfts)
        return ordered[int(0.9 * (len(ordered) - 1))] if ordered else 0.0
