"""SharedHeadroom: Headroom (headroom.py) whose statements and spends every replica shares (health.backend redis).

What a response stated, less this replica's attempts still waiting for theirs, goes to the others as the
target's windows (remaining, limit, wall-clock reset); each takes it less its own attempts still waiting.
Each attempt's share goes to the others too, so a request one replica starts counts on every replica
before its response comes back. Without Redis this is Headroom as it is: the replica's own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway_service.health.headroom import Headroom, Need, Window
from gateway_service.health.ratelimit_headers import RateLimits
from gateway_service.health.target import Target

Windows = dict[str, tuple[int, "int | None", float]]  # limit name -> remaining, of how much, until (wall clock)
Tell = Callable[[str, Target, object], None]  # "windows" with Windows, or "spent" with [input, output] tokens


class SharedHeadroom(Headroom):
    """The stated headroom of every target any replica has heard from."""

    def __init__(self, clock: Callable[[], float], *, enabled: bool, tell: Tell) -> None:
        super().__init__(clock, enabled=enabled)
        self.tell = tell

    def stated(self, target: Target, stated: RateLimits) -> None:
        super().stated(target, stated)
        now, wall = self.clock(), time.time()
        windows = {name: (w.remaining, w.limit, wall + w.until - now) for name, w in self._live(target).items()}
        if windows:
            self.tell("windows", target, windows)

    def spend(self, target: Target, need: Need) -> None:
        super().spend(target, need)
        if self._live(target):
            self.tell("spent", target, [need.input_tokens, need.output_tokens])

    def heard_windows(self, target: Target, windows: Windows) -> None:
        """Another replica's statement: taken less this replica's own attempts still unanswered."""
        now, wall = self.clock(), time.time()
        pending = self._pending(target, now)
        mine = self._windows.setdefault(target, {})
        for name, (remaining, limit, until) in windows.items():
            left = max(0, int(remaining) - sum(claim.need.of(name) for claim in pending))
            mine[name] = Window(left, None if limit is None else int(limit), now + float(until) - wall)

    def heard_spent(self, target: Target, need: Need) -> None:
        """Another replica started an attempt there: its share counts here too."""
        super().spend(target, need)
