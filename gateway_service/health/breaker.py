"""A circuit breaker per provider/model that judges health over a window, not a streak (docs/failover.md).

Closed: each result of the current generation goes into a sliding window of `window_s` seconds; the
breaker opens when the window holds at least `min_requests` results of which `error_rate` or more
failed, or at once after `consecutive` failures in a row (the fast path for a provider that is down).

Open: the candidate is skipped for `first_open_s`, doubled for each probe that failed since the last
close, at most `max_open_s` (Envoy's base_ejection_time growing with the ejection count). Skipping is
advice: a route whose candidates are all blocked still tries one (chat/rules.py, the last resort).

Half-open: the first attempt after the wait is the probe, the only one let through while it runs; its
success closes the breaker, its failure reopens it for longer; a probe the caller cancelled frees the slot.

Shared (health/shared.py): another replica's open and close are followed as if seen here (`opened_elsewhere`,
`closed_elsewhere`), so every replica's breaker opens, half-opens and closes together.

Generations: every open and every close starts a new generation, and a result counts only for the
generation its attempt started in. So a stream that began before an outage cannot close the breaker the
outage opened, and the burst of failures that opened it cannot reopen it once more (or make it longer).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class BreakerSettings:
    """The breaker's thresholds; the values (and their defaults) come from the config (health/settings.py)."""

    consecutive: int  # failures in a row that open the breaker at once
    window_s: float  # the sliding window the error rate is measured over
    min_requests: int  # results the window must hold before its error rate may open the breaker
    error_rate: float  # failed share of the window that opens the breaker
    first_open_s: float  # the first open; doubled for each failed probe
    max_open_s: float  # the longest open


class Phase(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"  # waiting out open_until
    HALF_OPEN = "half_open"  # the wait is over: the next attempt is the probe (or the probe is running)


class BreakerState(NamedTuple):
    """A breaker's generation (it moves on at each open and close) and phase: compared to tell a change."""

    generation: int
    phase: Phase


CLOSED = BreakerState(0, Phase.CLOSED)  # a breaker that has seen no attempt yet


@dataclass(frozen=True)
class Admission:
    """What the breaker said when an attempt started: its generation, and whether it is the probe."""

    generation: int
    probe: bool


class Breaker:
    """State of one provider/model; every method takes the time (monotonic seconds) from the caller."""

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self.generation = 0
        self.open_until: float | None = None  # None while closed
        self.probe_until: float | None = None  # while a probe runs: when it gives up waiting for a first token
        self.failed_probes = 0
        self.closed_at: float | None = None  # when it last closed after an open: the slow ramp starts there
        self._streak = 0
        self._window: deque[tuple[float, bool]] = deque()
        self._window_failures = 0

    def phase(self, now: float) -> Phase:
        if self.open_until is None:
            return Phase.CLOSED
        return Phase.OPEN if now < self.open_until else Phase.HALF_OPEN

    def state(self, now: float) -> BreakerState:
        return BreakerState(self.generation, self.phase(now))

    def admit(self, now: float, patience_s: float) -> Admission:
        """An attempt starts now; in the half-open phase the first one becomes the probe."""
        probe = self.phase(now) is Phase.HALF_OPEN and self.probe_until is None
        if probe:
            self.probe_until = now + patience_s
        return Admission(self.generation, probe)

    def succeeded(self, admission: Admission, now: float) -> bool:
        """Record a success; True when it closed the breaker."""
        if admission.generation != self.generation:
            return False
        if self.open_until is not None:
            # Started after the breaker opened (the probe, or a last-resort try): the provider answers again.
            self._close(now)
            return True
        self._streak = 0
        self._add(now, ok=True)
        return False

    def failed(self, admission: Admission, now: float) -> bool:
        """Record a failure; True when it opened (or reopened) the breaker."""
        if admission.generation != self.generation:
            return False
        if self.open_until is not None:
            if not admission.probe:
                return False  # a last-resort try while open: the breaker already knows
            self.failed_probes += 1
            self._open(now)
            return True
        self._streak += 1
        self._add(now, ok=False)
        if self._streak >= self.settings.consecutive or self._rate_exceeded():
            self._open(now)
            return True
        return False

    def cancelled(self, admission: Admission) -> None:
        """The attempt ended without a verdict (the caller went away): a probe frees its slot."""
        if admission.probe and admission.generation == self.generation:
            self.probe_until = None

    def opened_elsewhere(self, until: float, failed_probes: int) -> bool:
        """Another replica opened (or reopened) it until `until`; True unless it is open as long here already."""
        if self.open_until is not None and self.open_until >= until:
            return False
        self._new_generation()
        self.open_until = until
        self.failed_probes = max(self.failed_probes, failed_probes)
        return True

    def closed_elsewhere(self, now: float) -> bool:
        """Another replica's probe (or last-resort try) succeeded; True when it was open here."""
        if self.open_until is None:
            return False
        self._close(now)
        return True

    def error_rate(self, now: float) -> float:
        self._expire(now)
        return self._window_failures / len(self._window) if self._window else 0.0

    def _rate_exceeded(self) -> bool:
        count = len(self._window)
        return count >= self.settings.min_requests and self._window_failures >= self.settings.error_rate * count

    def _add(self, now: float, ok: bool) -> None:
        self._expire(now)
        self._window.append((now, ok))
        self._window_failures += not ok

    def _expire(self, now: float) -> None:
        horizon = now - self.settings.window_s
        window = self._window
        while window and window[0][0] < horizon:
            self._window_failures -= not window.popleft()[1]

    def _open(self, now: float) -> None:
        wait = min(self.settings.first_open_s * 2 ** min(self.failed_probes, 32), self.settings.max_open_s)
        self._new_generation()
        self.open_until = now + wait

    def _close(self, now: float) -> None:
        self._new_generation()
        self.closed_at = now
        self.open_until = None
        self.failed_probes = 0

    def _new_generation(self) -> None:
        self.generation += 1
        self.probe_until = None
        self._streak = 0
        self._window.clear()
        self._window_failures = 0
