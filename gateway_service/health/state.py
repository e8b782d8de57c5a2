"""A provider's (or one of its models') health state as callers (ListProviders, WatchProviders) and the metrics
see it.

In order:
    UNCONFIGURED   the provider has no key
    MISCONFIGURED  every model is blocked, and a block is the key's (auth or quota refused)
    UNHEALTHY      every model is blocked by the gateway's own guess alone (breaker, probe, stall)
    COOLING_DOWN   every model is blocked, some by a cooldown the provider asked for; or, on a provider
                   otherwise healthy, every model's rate-limit budget ran out on this replica, or its
                   provider's headers left it no requests or tokens (headroom.py)
    DEGRADED       some models are blocked (or out of budget), or the latest attempt failed
    HEALTHY        none of that
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from gateway_service.config import ProviderSpec
from gateway_service.health.blocks import KEY_REFUSED
from gateway_service.health.core import Health, Target
from gateway_service.health.headroom import Need

# When the rate-limit budget of a provider + model ran out, the wall-clock end of it (None: it has room).
ExhaustedUntil = Callable[[str, str], "float | None"]


class HealthState(enum.Enum):
    UNCONFIGURED = "unconfigured"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    COOLING_DOWN = "cooling_down"
    UNHEALTHY = "unhealthy"
    MISCONFIGURED = "misconfigured"


def provider_state(
    health: Health, spec: ProviderSpec, exhausted_until: ExhaustedUntil | None = None
) -> tuple[HealthState, float | None]:
    """The provider's state and, when cooling down or open, the wall-clock end of it."""
    return _state(health, spec, [m.name for m in spec.models], health.last_failed(spec.name), exhausted_until)


def model_state(
    health: Health, spec: ProviderSpec, model: str, exhausted_until: ExhaustedUntil | None = None
) -> tuple[HealthState, float | None]:
    """The state of one model of the provider (under its key), by the same rules as the provider's."""
    failed = health.recent.stats(Target(spec.name, model, spec.key_id)).last_failed
    return _state(health, spec, [model], failed, exhausted_until)


def _state(
    health: Health, spec: ProviderSpec, models: list[str], failed: bool, exhausted_until: ExhaustedUntil | None
) -> tuple[HealthState, float | None]:
    if not spec.configured:
        return HealthState.UNCONFIGURED, None
    state, until = _blocked_state(health, spec.name, models, spec.key_id, failed)
    if state not in (HealthState.HEALTHY, HealthState.DEGRADED):
        return state, until
    ends = [end for m in models if (end := _no_room_until(health, spec, m, exhausted_until)) is not None]
    if not ends:
        return state, until
    if len(ends) == len(models):
        return HealthState.COOLING_DOWN, min(ends)
    return HealthState.DEGRADED, until


def _no_room_until(
    health: Health, spec: ProviderSpec, model: str, exhausted_until: ExhaustedUntil | None
) -> float | None:
    """When a model with no room (its rate-limit budget spent, or no headroom left by its provider's headers)
    has room again, wall clock; None when it has room."""
    ends: list[float] = []
    if exhausted_until is not None and (budget := exhausted_until(spec.name, model)) is not None:
        ends.append(budget)
    short = health.headroom.shortage(Target(spec.name, model, spec.key_id), Need(1, 1))
    if short is not None and short.hard:
        ends.append(time.time() + short.until - health.now())
    return max(ends) if ends else None


def _blocked_state(
    health: Health, provider: str, models: list[str], key_id: str, failed: bool
) -> tuple[HealthState, float | None]:
    blocks = [b for m in models if (b := health.blocked(Target(provider, m, key_id))) is not None]
    if blocks and len(blocks) == len(models):
        until = time.time() + min(b.until for b in blocks) - health.now()
        if any(b.kind in KEY_REFUSED for b in blocks):
            return HealthState.MISCONFIGURED, until
        if all(b.kind is None for b in blocks):
            return HealthState.UNHEALTHY, until
        return HealthState.COOLING_DOWN, until
    degraded = bool(blocks) or failed
    return (HealthState.DEGRADED if degraded else HealthState.HEALTHY), None
