"""Hedged attempts: when an attempt has produced no output by the route's hedge delay, the next candidate
starts beside it, and the first of the two to produce output answers.

    delay       `hedge_after_ms`, or `hedge_after: p95_ttft`: the attempt's target's recent p95 time to first
                token (health/windows.py); no hedge while that target has none measured
    start       the next candidate by the route's order and the skip rules (chat/rules.py), as failover's
                next attempt would be; never once output was sent, never more than one hedge per request
    winner      the first attempt to hand out output claims the Race; the other is cancelled at once, its
                upstream request closed, and recorded as cancelled (its usage counted as for a caller gone)
    a failure   of one while the other still runs is failover's to record; the other goes on as the attempt.
                The last one standing fails as any attempt does: failover moves to the next candidate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

from gateway_service.chat.records import AttemptFailed
from gateway_service.config import Route
from gateway_service.domain.events import GatewayEvent, OutputDelta
from gateway_service.health import Health, Target

Events = AsyncGenerator[GatewayEvent, None]


class Outrun(Exception):
    """Another attempt of the request produced output first: this one stops (and is recorded as cancelled)."""


@dataclass
class Race:
    """Which of the two racing attempts produced output first: only that one may hand output to the caller
    (attempts after the race, by failover, are not in it)."""

    racers: frozenset[int]
    winner: int | None = None

    def claim(self, number: int) -> bool:
        """True when attempt `number` is not racing, or is (or now becomes) the one answering."""
        if number not in self.racers:
            return True
        if self.winner is None:
            self.winner = number
        return self.winner == number


@dataclass(frozen=True)
class HedgeAfter:
    """A route's hedge delay: fixed milliseconds, or the target's recent p95 time to first token."""

    ms: int | None = None
    p95_ttft: bool = False

    @classmethod
    def of(cls, route: Route | None) -> HedgeAfter | None:
        if route is None or (route.hedge_after_ms is None and route.hedge_after is None):
            return None
        return cls(route.hedge_after_ms, route.hedge_after == "p95_ttft")

    def delay_s(self, health: Health, target: Target) -> float | None:
        """Seconds after an attempt on `target` starts to start a hedge, or None for no hedge."""
        if self.ms is not None:
            return self.ms / 1000
        p95_ms = health.recent.stats(target).ttft_p95_ms
        return p95_ms / 1000 if p95_ms > 0 else None


async def race(
    first: Events, delay_s: float, start_hedge: Callable[[], Awaitable[Events | None]]
) -> AsyncGenerator[GatewayEvent | AttemptFailed, None]:
    """The events of `first`, and of the hedge `start_hedge` gives when `first` has no output by `delay_s`.

    A failure of one while the other runs is yielded (failover records it); the last one's is raised."""
    loop = asyncio.get_running_loop()
    hedge_at = loop.time() + delay_s
    lanes: dict[asyncio.Future[GatewayEvent], Events] = {}  # each racing attempt's read in flight
    racing: list[Events] = [first]  # closed when the race ends, whichever way (one may be between reads)
    waiting = True  # the hedge is not started yet

    def pull(events: Events) -> None:
        lanes[asyncio.ensure_future(anext(events))] = events

    pull(first)
    try:
        while lanes:
            timeout = max(0.0, hedge_at - loop.time()) if waiting else None
            done, _ = await asyncio.wait(set(lanes), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                waiting = False
                hedge = await start_hedge()
                if hedge is not None:
                    racing.append(hedge)
                    pull(hedge)
                continue
            for read in sorted(done, key=_output_last):
                events = lanes.pop(read)
                try:
                    event = read.result()
                except (StopAsyncIteration, Outrun):
                    continue
                except AttemptFailed as failed:
                    if not lanes:
                        raise  # the only attempt left (or failed before the hedge delay): failover as usual
                    yield failed
                    continue
                yield event
                if isinstance(event, OutputDelta):  # the winner: the other stops now
                    await _cancel(lanes, [e for e in racing if e is not events])
                    async for rest in events:
                        yield rest
                    return
                pull(events)
    finally:
        await _cancel(lanes, racing)


def _output_last(read: asyncio.Future[GatewayEvent]) -> bool:
    """Reads done in the same turn: the loser's Started before the winner's first output cancels it."""
    return not read.cancelled() and read.exception() is None and isinstance(read.result(), OutputDelta)


async def _cancel(lanes: dict[asyncio.Future[GatewayEvent], Events], attempts: list[Events]) -> None:
    """Stop `attempts`: each closes its upstream request and is recorded as cancelled (a read in flight is
    cancelled first: a generator cannot be closed while it runs)."""
    reads = list(lanes)
    for read in reads:
        read.cancel()
    await asyncio.gather(*reads, return_exceptions=True)
    lanes.clear()
    for attempt in attempts:
        with suppress(RuntimeError):  # one a cancelled read already finished
            await attempt.aclose()
