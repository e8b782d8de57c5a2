"""Upstreams that flap out of phase, for the chaos test and bench (tests/gateway/test_chaos.py, bench/chaos.py).

N simulators; upstream i goes down at i x period / N + k x period (period = down_s + up_s) for down_s,
its k-th outage being FAULTS[(i + k) % 4]: HTTP 503, a 429 with Retry-After: 1, a connection reset after
the response headers, a stall after them (until the client gives up). With three upstreams down 2 s and
up 2 s, at least one is up at every moment. Each change is logged with the time it took effect
(monotonic seconds), so a test judges "some upstream was up" from the upstreams' own state, not from
when the driver meant to switch (on a loaded machine a sleep ends late).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from llm_simulator import SimulatorHandle, start_simulator
from llm_simulator.faults import parse_fault
from llm_simulator.server import Observation

FAULTS = ("503", "429 retry_after=1", "disconnect at=0", "stall at=0")


@dataclass(frozen=True)
class Change:
    at: float  # monotonic seconds
    upstream: int
    fault: str  # "" when it came up


@dataclass
class Flapping:
    handles: list[SimulatorHandle]
    down_s: float = 2.0
    up_s: float = 2.0
    faults: Sequence[str] = FAULTS
    log: list[Change] = field(default_factory=list)

    @classmethod
    async def start(cls, count: int = 3, **kw: float) -> Flapping:
        return cls([await start_simulator() for _ in range(count)], **kw)  # type: ignore[arg-type]

    @property
    def period_s(self) -> float:
        return self.down_s + self.up_s

    async def run(self, seconds: float) -> None:
        """Flap for `seconds` from now, then bring every upstream up."""
        start = time.monotonic()
        for offset, upstream, fault in self._schedule(seconds):
            await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
            self._set(upstream, fault)
        await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
        for upstream in range(len(self.handles)):
            self._set(upstream, "")

    def _schedule(self, seconds: float) -> list[tuple[float, int, str]]:
        changes = []
        count = len(self.handles)
        for upstream in range(count):
            offset, k = upstream * self.period_s / count, 0
            while offset < seconds:
                changes.append((offset, upstream, self.faults[(upstream + k) % len(self.faults)]))
                changes.append((offset + self.down_s, upstream, ""))
                offset, k = offset + self.period_s, k + 1
        return sorted(c for c in changes if c[0] < seconds)

    def _set(self, upstream: int, fault: str) -> None:
        self.handles[upstream].simulator.set_standing_fault(fault or None)
        self.log.append(Change(time.monotonic(), upstream, fault))

    def fault_at(self, upstream: int, at: float) -> str:
        """The upstream's fault at monotonic time `at` ("" when up), from the log."""
        fault = ""
        for change in self.log:
            if change.at > at:
                break
            if change.upstream == upstream:
                fault = change.fault
        return fault

    def up_at(self, at: float) -> list[int]:
        return [u for u in range(len(self.handles)) if not self.fault_at(u, at)]

    def observations(self, upstream: int) -> list[Observation]:
        return sorted(self.handles[upstream].simulator.observations, key=lambda o: o.received_at)

    def inside_retry_after(self, grace_s: float) -> list[str]:
        """Requests an upstream received inside the Retry-After of a 429 it had sent, later than `grace_s` after
        it: what was already on its way when the gateway read the 429 does not count."""
        found = []
        for upstream in range(len(self.handles)):
            seen = self.observations(upstream)
            times = [o.received_at for o in seen]
            for obs in seen:
                if obs.status != 429:
                    continue
                wait = parse_fault(self.fault_at(upstream, obs.received_at) or "429").retry_after or 0.0
                lo = bisect.bisect_right(times, obs.received_at + grace_s)
                hi = bisect.bisect_left(times, obs.received_at + wait)
                found += [
                    f"upstream {upstream}: a request {times[j] - obs.received_at:.3f}s into a Retry-After of {wait:g}s"
                    for j in range(lo, hi)
                ]
        return found

    async def close(self) -> None:
        for handle in self.handles:
            await handle.close()
