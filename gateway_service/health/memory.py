"""Provider health kept by this replica, in memory: cooldowns per target, breakers and stall watches per
provider + model, rolling statistics per provider, and the watchers told of every change.

Failover tells it when an attempt starts (`admit`, which returns its Ticket), when it sees a first token
and how it ended; rules ask whether a target may be tried (`blocked`). Which failure blocks what, and how
hard, is blocks.py; this module only keeps the state.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from gateway_service.config import FailoverSettings
from gateway_service.domain.failures import ProviderError
from gateway_service.health.blocks import KEY_REFUSED, REQUEST_FAULTS, breaker_block, cooldown, stall_block
from gateway_service.health.breaker import CLOSED, Breaker, BreakerSettings, BreakerState
from gateway_service.health.core import Block, Target, Ticket
from gateway_service.health.headroom import Headroom
from gateway_service.health.settings import breaker_settings, stall_settings
from gateway_service.health.stalls import StallSettings, StallWatch
from gateway_service.health.statistics import Speed, Statistics, Stats, tokens_per_s
from gateway_service.health.windows import Recent


class MemoryHealth:
    """The Health of one replica (health/core.py), kept in memory."""

    def __init__(
        self,
        settings: FailoverSettings,
        clock: Callable[[], float] = time.monotonic,
        breaker: BreakerSettings | None = None,
        stalls: StallSettings | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.breaker_settings = breaker or breaker_settings(settings)
        self.stall_settings = stalls or stall_settings(settings)
        self.statistics = Statistics(settings.stats_window)
        self.headroom = Headroom(clock, enabled=settings.rate_limit_headers)
        self.recent = Recent(clock, settings.stats_window)
        self._cooldowns: dict[Target, Block] = {}
        self._breakers: dict[tuple[str, str], Breaker] = {}
        self._stalls: dict[tuple[str, str], StallWatch] = {}
        self._speeds: dict[tuple[str, str], Speed] = {}
        self._watchers: set[asyncio.Queue[str]] = set()
        self._ids = itertools.count(1)

    def now(self) -> float:
        return self.clock()

    def blocked(self, target: Target) -> Block | None:
        now = self.clock()
        soft: Block | None = None
        for scope in (target, target.any_model()):
            block = self._cooldowns.get(scope)
            if block and block.until > now:
                if block.hard:
                    return block
                soft = block
        return soft or self._breaker_block(target, now) or self._stall_block(target, now)

    def _breaker_block(self, target: Target, now: float) -> Block | None:
        breaker = self._breakers.get(target.provider_model)
        return breaker_block(breaker, now) if breaker is not None else None

    def _stall_block(self, target: Target, now: float) -> Block | None:
        watch = self._stalls.get(target.provider_model)
        suspect = watch.suspect(now) if watch is not None else None
        return stall_block(suspect, now) if suspect is not None else None

    def breaker_state(self, target: Target) -> BreakerState:
        breaker = self._breakers.get(target.provider_model)
        return breaker.state(self.clock()) if breaker is not None else CLOSED

    def admit(self, target: Target, patience_s: float) -> Ticket:
        now = self.clock()
        ticket = Ticket(target, next(self._ids), self._breaker(target).admit(now, patience_s), now)
        self._watch(target).started(ticket.id, now, patience_s)
        self.recent.started(target)
        return ticket

    def first_token(self, ticket: Ticket) -> None:
        self._watch(ticket.target).first_token(ticket.id, self.clock() - ticket.started)

    def record_success(self, ticket: Ticket, ttft_s: float | None, total_s: float, output_tokens: int = 0) -> None:
        target = self._ended(ticket)
        self._breaker(target).succeeded(ticket.admission, self.clock())
        self.statistics.record(target.provider, True, ttft_s, total_s)
        speed = self._speeds.get(target.provider_model, Speed())
        self._speeds[target.provider_model] = speed.add(ttft_s, tokens_per_s(output_tokens, ttft_s, total_s))
        self.recent.succeeded(target, ttft_s, total_s, output_tokens)
        self._changed(target.provider)

    def record_cancelled(self, ticket: Ticket) -> None:
        self._breaker(self._ended(ticket)).cancelled(ticket.admission)
        self.recent.cancelled(ticket.target)

    def record_failure(self, ticket: Ticket, error: ProviderError, total_s: float) -> BreakerState:
        target = self._ended(ticket)
        breaker = self._breaker(target)
        if error.kind in REQUEST_FAULTS:
            breaker.cancelled(ticket.admission)  # no verdict on the provider
            self.statistics.record(target.provider, True, None, total_s)
            self.recent.succeeded(target, None, total_s)
            return breaker.state(self.clock())
        self.statistics.failed(target.provider, f"{error.kind.value}: {error.message}")
        self.statistics.record(target.provider, False, None, total_s)
        self.recent.failed(target, error.kind)
        block = cooldown(error, self.settings, self.clock())
        if block is not None:
            self._cooldowns[target.any_model() if error.kind in KEY_REFUSED else target] = block
            breaker.cancelled(ticket.admission)
        else:
            breaker.failed(ticket.admission, self.clock())
        self._changed(target.provider)
        return breaker.state(self.clock())

    def _breaker(self, target: Target) -> Breaker:
        return self._breakers.setdefault(target.provider_model, Breaker(self.breaker_settings))

    def _watch(self, target: Target) -> StallWatch:
        return self._stalls.setdefault(target.provider_model, StallWatch(self.stall_settings))

    def _ended(self, ticket: Ticket) -> Target:
        self._watch(ticket.target).ended(ticket.id)
        return ticket.target

    def in_flight(self, target: Target) -> int:
        return self.recent.in_flight(target)

    def speed(self, target: Target) -> Speed:
        return self._speeds.get(target.provider_model, Speed())

    def recovered_at(self, target: Target) -> float | None:
        breaker = self._breakers.get(target.provider_model)
        return breaker.closed_at if breaker is not None else None

    def stats(self, provider: str) -> Stats:
        return self.statistics.stats(provider)

    def last_error(self, provider: str) -> str:
        return self.statistics.last_error(provider)

    def last_failed(self, provider: str) -> bool:
        return self.statistics.last_failed(provider)

    def watch(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)
        self._watchers.add(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[str]) -> None:
        self._watchers.discard(queue)

    def notify(self, provider: str) -> None:
        self._changed(provider)

    def start(self) -> None:
        """Nothing runs in the background of one replica's memory."""

    async def aclose(self) -> None:
        """Nothing to close."""

    def _changed(self, provider: str) -> None:
        for queue in self._watchers:
            if not queue.full():  # a watcher that does not read loses changes, never blocks a chat
                queue.put_nowait(provider)
