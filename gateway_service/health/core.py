"""What health speaks in: a Target (target.py), a Block, an attempt's Ticket, and the Health interface failover calls.

`Health` is a Protocol so that where health is kept can change without touching its callers: one replica
keeps it in memory (health/memory.py), or every replica shares it through Redis (health/shared.py). The
calls are synchronous and on the request path (several per attempt), so the shared store answers from its
local copy and exchanges changes with the others in the background, never a round trip per call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.health.breaker import Admission, BreakerState
from gateway_service.health.headroom import Headroom
from gateway_service.health.statistics import Speed, Stats
from gateway_service.health.target import ANY_MODEL, Target
from gateway_service.health.windows import Recent

__all__ = ["ANY_MODEL", "Block", "Health", "Target", "Ticket"]


@dataclass(frozen=True)
class Block:
    """Why a target may not be tried now, and until when (monotonic seconds).

    `kind` is the failure behind a cooldown, None for the breaker and the stall watch; `hard` blocks are
    never tried before `until`, soft ones may be tried as a last resort.
    """

    kind: FailureKind | None
    until: float
    hard: bool = False
    what: str = "circuit breaker open"
    stall: bool = False  # an attempt is stalled there now: a last resort would most likely wait it out too


@dataclass(eq=False)
class Ticket:
    """One attempt as health sees it, from `admit` to its result."""

    target: Target
    id: int
    admission: Admission
    started: float


class Health(Protocol):
    """What the pipeline asks of provider health (reads) and tells it about each attempt (writes)."""

    headroom: Headroom  # what each target's provider said it has left (headroom.py)
    recent: Recent  # each target's attempts and errors over the last 1, 5, 60 minutes, in flight (windows.py)

    def now(self) -> float:
        """The monotonic clock every `Block.until` is on."""
        ...

    def blocked(self, target: Target) -> Block | None:
        """The reason this target should be skipped now (hard blocks first), or None when it may be tried."""
        ...

    def breaker_state(self, target: Target) -> BreakerState:
        """The breaker's generation and phase, to tell whether it moved on since."""
        ...

    def admit(self, target: Target, patience_s: float) -> Ticket:
        """An attempt starts now and waits at most `patience_s` for its first token."""
        ...

    def first_token(self, ticket: Ticket) -> None: ...

    def record_success(self, ticket: Ticket, ttft_s: float | None, total_s: float, output_tokens: int = 0) -> None: ...

    def record_cancelled(self, ticket: Ticket) -> None: ...

    def record_failure(self, ticket: Ticket, error: ProviderError, total_s: float) -> BreakerState:
        """Record a failure; returns the breaker's state right after it, to tell later whether it moved on."""
        ...

    def in_flight(self, target: Target) -> int:
        """Attempts of this target admitted and not yet ended (policy least_busy)."""
        ...

    def speed(self, target: Target) -> Speed:
        """Decaying averages of the provider + model's time to first token and tokens/s (policy lowest_latency)."""
        ...

    def recovered_at(self, target: Target) -> float | None:
        """When the provider + model's breaker last closed after an open (the slow ramp's start), else None."""
        ...

    def stats(self, provider: str) -> Stats: ...

    def last_error(self, provider: str) -> str: ...

    def last_failed(self, provider: str) -> bool:
        """Whether the provider's latest attempt failed."""
        ...

    def watch(self) -> asyncio.Queue[str]:
        """A queue that gets a provider's name whenever its health changes."""
        ...

    def unwatch(self, queue: asyncio.Queue[str]) -> None: ...

    def notify(self, provider: str) -> None:
        """Tell watchers of a change health does not track itself (a rate-limit budget ran out)."""
        ...

    def start(self) -> None:
        """Start what runs in the background (the shared store's exchange); in a running event loop."""
        ...

    async def aclose(self) -> None: ...
