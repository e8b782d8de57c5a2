"""The slow ramp after a recovery (Envoy's slow start): a target whose breaker closed gets its traffic back
over `routing.slow_start_window_s`, not all at once.

Its share of requests `t` seconds after the close is

    share = max(slow_start_min_share, (t / window) ^ (1 / slow_start_aggression))     (1 once t >= window)

A weighted route scales the target's weight by the share; every other policy keeps the target where it
ranked it for `share` of the requests and moves it behind the targets not ramping for the rest. Which
requests those are is counted, not drawn: each request adds the share to the target's credit, and a request
that brings the credit to 1 keeps the target in place (and spends the 1), so the share is exact over any run
of requests, and a test can predict it.
"""

from __future__ import annotations

from gateway_service.config import RoutingSettings
from gateway_service.health.core import Health
from gateway_service.health.target import Target


class SlowStart:
    def __init__(self, settings: RoutingSettings, health: Health) -> None:
        self.settings = settings
        self.health = health
        self._credit: dict[Target, tuple[float, float]] = {}  # target -> (the close it ramps after, credit)

    def share(self, target: Target) -> float:
        """The target's share of traffic now: 1 unless it is ramping up after a recovery."""
        window = self.settings.slow_start_window_s
        closed_at = self.health.recovered_at(target)
        if closed_at is None or window <= 0:
            return 1.0
        elapsed = self.health.now() - closed_at
        if elapsed >= window:
            self._credit.pop(target, None)
            return 1.0
        grown: float = (max(elapsed, 0.0) / window) ** (1 / self.settings.slow_start_aggression)
        return max(self.settings.slow_start_min_share, grown)

    def keeps_place(self, target: Target, share: float) -> bool:
        """Whether this request keeps a ramping target where its policy put it (`share` of the requests)."""
        closed_at = self.health.recovered_at(target)
        if share >= 1.0 or closed_at is None:
            return True
        since, credit = self._credit.get(target, (closed_at, 0.0))
        credit = (credit if since == closed_at else 0.0) + share
        keeps = credit >= 1.0 - 1e-9  # ten shares of 0.1 add up to 0.999...: still one request
        self._credit[target] = (closed_at, credit - 1.0 if keeps else credit)
        return keeps
