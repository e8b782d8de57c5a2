"""The vocabulary both limiters and the budgets share: slots, charges, refusals, and the GCRA arithmetic.

Below memory.py, redis_limiter.py and budgets.py, importing none of them (see budgets.py for the model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway_service.config import Rate

Clock = Callable[[], float]
Count = Callable[[str, Mapping[str, str]], None]  # one more of a named, labelled event (Telemetry.count)


def no_count(name: str, labels: Mapping[str, str]) -> None:
    """The Count of a limiter nobody reads the counts of (tests, no telemetry)."""


@dataclass(frozen=True)
class Slot:
    """One rate of one subject (`provider:openai`, `model:openai/gpt-4o`, `user:alice`) and its storage key."""

    subject: str
    rate: Rate
    key: str


Charge = tuple[Slot, float]  # a slot and the units to take (or, when settling, to add back or take more)


@dataclass(frozen=True)
class Exceeded:
    """A slot that cannot give what was asked, and how long until it can."""

    slot: Slot
    retry_after_s: float

    def describe(self) -> str:
        return f"{self.slot.rate.name} budget of {self.slot.rate.limit} used up; frees in {self.retry_after_s:.3f}s"


@dataclass(frozen=True)
class Hold:
    """Budget taken for an attempt (or a call): `tokens` were estimated; settle() squares them with usage."""

    token_slots: tuple[Slot, ...]
    tokens: int


@dataclass(frozen=True)
class Taken:
    """What one take got: nothing when `first` was refused; `then` only when both had room."""

    first: Hold | None
    then: Hold | None
    exceeded: list[Exceeded]


class Limiter(Protocol):
    async def acquire(self, charges: Sequence[Charge], then: Sequence[Charge] = ()) -> list[Exceeded]:
        """Take every charge or none; once they are taken, every one of `then` or none of those.

        The exceeded slots say what was refused: any of `charges` means nothing was taken. Two groups
        in one call let a request's user and first candidate cost one Redis round trip, not two.
        """
        ...

    def settle(self, charges: Sequence[Charge]) -> None:
        """Add (or give back, when negative) units; never blocks the caller."""
        ...

    async def aclose(self) -> None: ...


def admit(tat: float, now: float, cost: float, rate: Rate) -> tuple[float, float]:
    """(the new TAT, 0.0) when the bucket holds `cost`, else (the unchanged TAT, seconds until it will)."""
    base = max(tat, now)
    new = base + cost * rate.window_s / rate.limit
    wait = new - rate.window_s - now
    # A full bucket lets even a request larger than the whole budget through; it then owes the excess.
    if wait <= 0 or base <= now:
        return new, 0.0
    return tat, wait


def adjust(tat: float, now: float, delta: float, rate: Rate) -> float:
    """The TAT after `delta` more units were used (fewer when negative); never beyond a full bucket."""
    return max(max(tat, now) + delta * rate.window_s / rate.limit, now)
