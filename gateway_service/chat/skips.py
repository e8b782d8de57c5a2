"""Why a candidate is passed over without a request: the checks failover makes before each attempt.

In order: no credentials, a CONTINUE that needs an assistant prefill the model cannot take, a context
window no larger than one that already answered "context too long", a breaker open or a cooldown
(per provider, model and key), and too little of the caller's deadline left. Budgets are taken
separately (chat/budgeting.py), since taking them may need a round trip to Redis.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway_service.chat.router import Candidate
from gateway_service.domain.events import SkipReason
from gateway_service.domain.failures import FailureKind
from gateway_service.health import Health


@dataclass(frozen=True)
class Skip:
    """Why, in words, and when the candidate may be tried again (None when unknown or never)."""

    reason: FailureKind | SkipReason
    message: str
    retry_after_s: float | None = None


def skip_reason(
    candidate: Candidate, health: Health, *, need_prefill: bool, min_context: int, time_left_s: float,
    min_attempt_budget_s: float,
) -> Skip | None:  # fmt: skip
    """The reason to pass `candidate` over, or None to try it."""
    if candidate.adapter is None:
        return Skip(SkipReason.NOT_CONFIGURED, f"set {candidate.provider.credential_source}")
    if need_prefill and not candidate.model.assistant_prefill:
        return Skip(SkipReason.NO_PREFILL, "cannot continue a partial assistant answer")
    window = candidate.model.context_window
    if window and window <= min_context:
        return Skip(SkipReason.CONTEXT_TOO_SMALL, f"context window {window} too small")
    block = health.blocked(candidate.provider.name, candidate.model.name, candidate.key_id)
    if block is not None:
        left = max(0.0, block.until - time.monotonic())
        if block.kind is None:
            return Skip(SkipReason.UNHEALTHY, f"circuit breaker open for {left:.3f}s", left)
        return Skip(block.kind, f"cooling down for {left:.3f}s after {block.kind.value}", left)
    if time_left_s < min_attempt_budget_s:
        return Skip(SkipReason.DEADLINE, "less than the minimum attempt budget of the deadline left")
    return None
