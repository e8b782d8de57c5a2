"""Provider health: what failover may try, and how providers look to callers and operators.

Rooms, from the vocabulary up:
    target.py      Target: provider + model + key
    core.py        Block, Ticket, and the Health interface the pipeline calls
    breaker.py     a circuit breaker per provider + model: window, half-open probe, generations
    stalls.py      stall suspicion: a first token far later than usual
    statistics.py  rolling statistics per provider (ListProviders), decaying speeds (routing)
    ratelimit_headers.py  what a response's rate-limit headers state (OpenAI, Groq, Anthropic, Retry-After)
    headroom.py    Headroom: what each target's provider said it has left, until its reset
    windows.py     recent statistics per target: 1, 5, 60-minute windows, TTFT, tokens/s, in flight
    views.py       what ListProviders and the metrics show of each model
    blocks.py      which failures block a target, hard or soft, and for how long
    settings.py    breaker and stall settings from the config (the config owns the defaults)
    memory.py      MemoryHealth: the Health of one replica, kept in memory
    shared.py      RedisHealth: MemoryHealth whose cooldowns, breakers and probe every replica shares
    shared_headroom.py  SharedHeadroom: Headroom whose statements and spends every replica shares
    exchange.py    shared health's Redis: state keys, pub/sub, the probe's claim, Redis away and back
    backends.py    build_health: memory, or Redis for `health.backend: redis` (imported only then)
    ramp.py        the slow ramp: a target's share of traffic after its breaker closed
    state.py       HealthState and the policy that names a provider's state

Public: what `__all__` names, imported from this package. Breakers, stall watches and their settings are
health's own business: nothing outside health/ imports breaker.py or stalls.py (tests/contracts checks it).
Health is a Protocol so the store shared by replicas (shared.py) stands beside memory.py, behind the same calls.
"""

from __future__ import annotations

from gateway_service.health.backends import build_health
from gateway_service.health.breaker import BreakerState
from gateway_service.health.core import ANY_MODEL, Block, Health, Target, Ticket
from gateway_service.health.headroom import Headroom, Need, Shortage, Window
from gateway_service.health.memory import MemoryHealth
from gateway_service.health.ramp import SlowStart
from gateway_service.health.ratelimit_headers import Quota, RateLimits, rate_limits, retry_after_s
from gateway_service.health.state import ExhaustedUntil, HealthState, model_state, provider_state
from gateway_service.health.statistics import Speed, Stats
from gateway_service.health.views import HeadroomView, ModelView, model_views, summed
from gateway_service.health.windows import WINDOWS_S, TargetStats, WindowCounts

__all__ = [
    "ANY_MODEL",
    "WINDOWS_S",
    "Block",
    "BreakerState",
    "ExhaustedUntil",
    "Headroom",
    "HeadroomView",
    "Health",
    "HealthState",
    "MemoryHealth",
    "ModelView",
    "Need",
    "Quota",
    "RateLimits",
    "Shortage",
    "SlowStart",
    "Speed",
    "Stats",
    "Target",
    "TargetStats",
    "Ticket",
    "Window",
    "WindowCounts",
    "build_health",
    "model_state",
    "model_views",
    "provider_state",
    "rate_limits",
    "retry_after_s",
    "summed",
]
