"""RedisHealth: MemoryHealth whose cooldowns, breaker opens and closes and half-open probe every replica shares
(`health.backend: redis`, docs/failover.md#shared-across-replicas).

Each replica still answers every call from its own memory (the calls are synchronous and on the request
path); what changes is that it tells the others, through exchange.py, and takes what they tell it:
    a cooldown       (a 429's Retry-After, a refused key): the same block, until the same wall-clock end
    a breaker open   (or a reopen after a failed probe): open until the same end, with the same failed probes
    a breaker close  (a probe succeeded): closed here too, so every replica's slow ramp starts together
    headroom         what a response's rate-limit headers stated, and each attempt's share (shared_headroom.py)
    the probe        when a breaker half-opens, the replicas race for it (SET NX PX); the one that wins probes,
                     the others skip the target ("its probe running on another replica") until the probe's
                     result arrives, or its claim lapses and they race again.
Times cross replicas as wall-clock seconds (replicas kept by NTP agree to milliseconds); each replica keeps
them on its own monotonic clock. Stall watches, statistics and the recent windows stay each replica's own.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway_service.config import FailoverSettings
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.health.breaker import Breaker, BreakerState, Phase
from gateway_service.health.core import Block, Target, Ticket
from gateway_service.health.exchange import Exchange, Message
from gateway_service.health.headroom import Need
from gateway_service.health.memory import MemoryHealth
from gateway_service.health.shared_headroom import SharedHeadroom

CLAIM_S = 2.0  # a won probe waits this long for a request to probe with, then the others may race again
_ELSEWHERE = "circuit breaker half-open, its probe running on another replica"
_CLAIMING = "circuit breaker half-open, its probe being claimed"
HALF_OPEN_KEPT_S = 60.0  # an open's key outlives its end this long, so a replica started meanwhile half-opens too


@dataclass(frozen=True)
class _Claim:
    """Who has the probe of a half-open breaker (this generation of it here), until when (monotonic)."""

    generation: int
    mine: bool
    until: float


class RedisHealth(MemoryHealth):
    """The Health of every replica together (health/core.py); each replica's own while Redis is away."""

    def __init__(
        self,
        settings: FailoverSettings,
        connect: Callable[[Callable[[Message], None]], Exchange],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(settings, clock)
        self.exchange = connect(self._apply)
        self.headroom = self.shared_headroom = SharedHeadroom(
            clock, enabled=settings.rate_limit_headers, tell=self._tell_headroom
        )
        self._claims: dict[tuple[str, str], _Claim] = {}
        self._claiming: set[tuple[str, str]] = set()

    @property
    def shared(self) -> bool:
        return self.exchange.up

    def start(self) -> None:
        self.exchange.start()

    async def aclose(self) -> None:
        await self.exchange.aclose()

    # What this replica sees, told to the others.

    def blocked(self, target: Target) -> Block | None:
        block = super().blocked(target)
        if block is not None or not self.exchange.up:
            return block
        breaker = self._breakers.get(target.provider_model)
        now = self.clock()
        if breaker is None or breaker.phase(now) is not Phase.HALF_OPEN or breaker.probe_until is not None:
            return None
        return self._probe_block(target.provider_model, breaker, now)

    def admit(self, target: Target, patience_s: float) -> Ticket:
        ticket = super().admit(target, patience_s)
        if ticket.admission.probe and self.exchange.up:
            # Hold the claim while the probe waits for its first token, and a little beyond.
            self._claim_now(target.provider_model, ticket.admission.generation, patience_s + CLAIM_S)
        return ticket

    def record_success(self, ticket: Ticket, ttft_s: float | None, total_s: float, output_tokens: int = 0) -> None:
        before = self.breaker_state(ticket.target)
        super().record_success(ticket, ttft_s, total_s, output_tokens)
        after = self.breaker_state(ticket.target)
        if after.phase is Phase.CLOSED and after.generation != before.generation:
            self._tell_closed(ticket.target)
        elif ticket.admission.probe:
            self._release(ticket.target)

    def record_cancelled(self, ticket: Ticket) -> None:
        super().record_cancelled(ticket)
        if ticket.admission.probe:
            self._release(ticket.target)

    def record_failure(self, ticket: Ticket, error: ProviderError, total_s: float) -> BreakerState:
        target = ticket.target
        scopes = (target, target.any_model())
        before = [self._cooldowns.get(scope) for scope in scopes]
        generation = self.breaker_state(target).generation
        state = super().record_failure(ticket, error, total_s)
        for scope, old in zip(scopes, before, strict=True):
            block = self._cooldowns.get(scope)
            if block is not None and block is not old:
                self._tell_cooldown(scope, block)
        if state.phase is Phase.OPEN and state.generation != generation:
            self._tell_open(target)
        elif ticket.admission.probe:
            self._release(target)
        return state

    def _tell_cooldown(self, scope: Target, block: Block) -> None:
        assert block.kind is not None  # a cooldown is always a failure's
        names = [scope.provider, scope.model, scope.key_id]
        message = {
            "type": "cooldown",
            "target": names,
            "kind": block.kind.value,
            "until": self._wall(block.until),
            "hard": block.hard,
        }
        self.exchange.send(message, self.exchange.state_key(_name("cooldown", *names)), self._left(block.until))

    def _tell_open(self, target: Target) -> None:
        breaker = self._breakers[target.provider_model]
        assert breaker.open_until is not None
        pm = list(target.provider_model)
        message = {
            "type": "open",
            "pm": pm,
            "until": self._wall(breaker.open_until),
            "failed_probes": breaker.failed_probes,
        }
        key = self.exchange.state_key(_name("breaker", *pm))
        # One MULTI: the probe's claim goes with the reopen, so no replica races for a probe of the old open.
        self.exchange.send(message, key, self._left(breaker.open_until) + HALF_OPEN_KEPT_S, (self._probe_key(target),))

    def _tell_closed(self, target: Target) -> None:
        pm = list(target.provider_model)
        self._claims.pop(target.provider_model, None)
        key = self.exchange.state_key(_name("breaker", *pm))
        self.exchange.send({"type": "closed", "pm": pm}, key, None, (self._probe_key(target),))

    def _release(self, target: Target) -> None:
        if self._claims.pop(target.provider_model, None) is not None:
            self.exchange.release(self._probe_key(target), {"type": "freed", "pm": list(target.provider_model)})

    def _tell_headroom(self, kind: str, target: Target, payload: object) -> None:
        names = [target.provider, target.model, target.key_id]
        if kind == "spent":
            self.exchange.send({"type": "spent", "target": names, "need": payload}, None, None)
            return
        assert isinstance(payload, dict)
        ttl_s = max(until for _, _, until in payload.values()) - time.time()
        key = self.exchange.state_key(_name("headroom", *names))
        self.exchange.send({"type": "headroom", "target": names, "windows": payload}, key, max(0.001, ttl_s))

    # The half-open probe: one replica of all.

    def _probe_block(self, pm: tuple[str, str], breaker: Breaker, now: float) -> Block | None:
        claim = self._claims.get(pm)
        current = claim is not None and claim.generation == breaker.generation
        if claim is not None and current and claim.until > now:
            if claim.mine:
                return None
            return Block(None, claim.until, what=_ELSEWHERE)
        self._claim_now(pm, breaker.generation, CLAIM_S)
        # Another replica's claim lapsed here: it has most likely held it on for its probe (it does not say so).
        what = _ELSEWHERE if current and claim is not None and not claim.mine else _CLAIMING
        return Block(None, now + self.exchange.timeout_s, what=what)

    def _claim_now(self, pm: tuple[str, str], generation: int, ttl_s: float) -> None:
        if pm in self._claiming:
            return
        self._claiming.add(pm)
        started = self.clock()

        async def claim() -> None:
            try:
                left_s = await self.exchange.claim(self._probe_key(Target(*pm, "")), ttl_s)
            finally:
                self._claiming.discard(pm)
            mine = left_s is None
            self._claims[pm] = _Claim(generation, mine, started + ttl_s if mine else self.clock() + (left_s or 0.0))
            self._changed(pm[0])

        self.exchange.spawn(claim)

    def _probe_key(self, target: Target) -> str:
        return self.exchange.probe_key(_name("probe", target.provider, target.model))

    # What the others tell.

    def _apply(self, message: Message) -> None:
        kind = message["type"]
        if kind == "cooldown":
            self._cooled_elsewhere(Target(*message["target"]), message)
            return
        if kind in ("headroom", "spent"):
            target = Target(*message["target"])
            if kind == "headroom":
                self.shared_headroom.heard_windows(target, message["windows"])
            else:
                self.shared_headroom.heard_spent(target, Need(int(message["need"][0]), int(message["need"][1])))
            self._changed(target.provider)
            return
        pm = (str(message["pm"][0]), str(message["pm"][1]))
        self._claims.pop(pm, None)
        if kind == "open":
            breaker = self._breakers.setdefault(pm, Breaker(self.breaker_settings))
            breaker.opened_elsewhere(self._monotonic(float(message["until"])), int(message["failed_probes"]))
        elif kind == "closed" and (closing := self._breakers.get(pm)) is not None:
            closing.closed_elsewhere(self.clock())
        self._changed(pm[0])

    def _cooled_elsewhere(self, scope: Target, message: Message) -> None:
        until = self._monotonic(float(message["until"]))
        current = self._cooldowns.get(scope)
        if until > self.clock() and (current is None or current.until < until):
            self._cooldowns[scope] = Block(FailureKind(message["kind"]), until, hard=bool(message["hard"]))
            self._changed(scope.provider)

    def _wall(self, monotonic: float) -> float:
        return time.time() + monotonic - self.clock()

    def _monotonic(self, wall: float) -> float:
        return self.clock() + wall - time.time()

    def _left(self, until: float) -> float:
        return max(0.001, math.ceil((until - self.clock()) * 1000) / 1000)


def _name(*parts: str) -> str:
    """A key's last part from names that may hold ':' or '/' (provider, model, key id): unambiguous as JSON."""
    return json.dumps(parts, separators=(",", ":"))
