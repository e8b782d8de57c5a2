"""chat/hedging.py's race on its own: two event streams of our own, gated by the test, no clock to wait on
but the hedge delay (0 or 60 s, so which side of it a step is on is never in doubt)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway_service.chat.hedging import Events, Race, race
from gateway_service.domain.events import AttemptStarted, OutputDelta
from gateway_service.domain.request import TextDelta

pytestmark = pytest.mark.timeout(10)


class Lane:
    """One attempt's events: Started, then (once `gate` is set) two deltas; `closed` once it ends anyhow."""

    def __init__(self, name: str, number: int) -> None:
        self.name, self.number = name, number
        self.gate = asyncio.Event()
        self.closed = False
        self.finished = False

    async def events(self) -> Events:
        try:
            yield AttemptStarted(self.name, "m", self.number, hedge=self.number > 1)
            await self.gate.wait()
            yield OutputDelta(1, TextDelta(self.name))
            yield OutputDelta(2, TextDelta(self.name))
            self.finished = True
        finally:
            self.closed = True


def seen(events: Sequence[object]) -> list[tuple[str, str]]:
    out = []
    for event in events:
        if isinstance(event, AttemptStarted):
            out.append(("started", event.provider))
        elif isinstance(event, OutputDelta):
            assert isinstance(event.piece, TextDelta)
            out.append(("delta", event.piece.text))
    return out


async def test_a_silent_attempt_is_hedged_and_the_first_output_wins() -> None:
    first, hedge = Lane("a", 1), Lane("b", 2)

    async def start() -> Events:
        hedge.gate.set()  # the hedge answers; the first never does
        return hedge.events()

    events = [event async for event in race(first.events(), 0.0, start)]
    assert seen(events) == [("started", "a"), ("started", "b"), ("delta", "b"), ("delta", "b")]
    assert first.closed and not first.finished  # cancelled the moment b's first delta came
    assert hedge.finished


async def test_output_before_the_delay_starts_no_hedge() -> None:
    first = Lane("a", 1)
    first.gate.set()
    hedges: list[int] = []

    async def start() -> Events | None:
        hedges.append(1)
        return None

    events = [event async for event in race(first.events(), 60.0, start)]
    assert seen(events) == [("started", "a"), ("delta", "a"), ("delta", "a")]
    assert hedges == []


async def test_with_no_candidate_to_hedge_with_the_first_goes_on() -> None:
    first = Lane("a", 1)

    async def start() -> Events | None:
        first.gate.set()  # asked for a hedge: none is left, and the first answers after all
        return None

    events = [event async for event in race(first.events(), 0.0, start)]
    assert seen(events) == [("started", "a"), ("delta", "a"), ("delta", "a")]


async def test_leaving_the_race_closes_both_attempts() -> None:
    first, hedge = Lane("a", 1), Lane("b", 2)

    async def start() -> Events:
        return hedge.events()

    events = race(first.events(), 0.0, start)
    assert isinstance(await anext(events), AttemptStarted)
    assert isinstance(await anext(events), AttemptStarted)  # the hedge's: both now wait for output
    await events.aclose()  # the caller went away
    assert first.closed and hedge.closed


def test_only_the_first_racer_to_claim_may_deliver_and_later_attempts_are_free() -> None:
    race_ = Race(frozenset((1, 2)))
    assert race_.claim(2) and race_.claim(2)
    assert not race_.claim(1)
    assert race_.claim(3)  # a failover after the race is not in it
