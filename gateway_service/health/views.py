"""What ListProviders, WatchProviders and the metrics show of each model: its state, recent statistics,
headroom and prices, read from health in one place so the gRPC view and the Prometheus view agree."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from gateway_service.config import ModelSpec, ProviderSpec
from gateway_service.domain.failures import FailureKind
from gateway_service.health.core import Health, Target
from gateway_service.health.state import ExhaustedUntil, HealthState, model_state
from gateway_service.health.windows import TargetStats, WindowCounts


@dataclass(frozen=True)
class HeadroomView:
    """One limit the provider's headers stated for the model: what is left, of how much, until when."""

    limit: str  # requests | tokens | input_tokens | output_tokens
    remaining: int
    of: int | None
    resets_at: float  # wall clock


@dataclass(frozen=True)
class ModelView:
    provider: str
    model: ModelSpec
    state: HealthState
    until: float | None  # wall clock: the end of its cooldown, open breaker or exhausted headroom
    stats: TargetStats
    headroom: tuple[HeadroomView, ...]


def model_views(health: Health, spec: ProviderSpec, exhausted_until: ExhaustedUntil | None = None) -> list[ModelView]:
    views = []
    for model in spec.models:
        target = Target(spec.name, model.name, spec.key_id)
        state, until = model_state(health, spec, model.name, exhausted_until)
        views.append(ModelView(spec.name, model, state, until, health.recent.stats(target), _headroom(health, target)))
    return views


def _headroom(health: Health, target: Target) -> tuple[HeadroomView, ...]:
    offset = time.time() - health.now()  # monotonic to wall clock
    windows = health.headroom.windows(target)
    return tuple(HeadroomView(name, w.remaining, w.limit, w.until + offset) for name, w in windows.items())


def summed(views: Sequence[ModelView]) -> tuple[WindowCounts, ...]:
    """The provider's windows: its models' added up."""
    if not views:
        return ()
    totals = []
    for index, first in enumerate(views[0].stats.windows):
        windows = [v.stats.windows[index] for v in views]
        errors: Counter[FailureKind] = Counter()
        for window in windows:
            errors.update(window.errors)
        requests, failures = sum(w.requests for w in windows), sum(w.failures for w in windows)
        totals.append(WindowCounts(first.window_s, requests, failures, dict(errors)))
    return tuple(totals)
