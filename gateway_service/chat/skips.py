"""Why a candidate is passed over without a request: the checks failover makes before each attempt.

In order: no credentials, a CONTINUE that needs an assistant prefill the model cannot take, a context
window no larger than one that already answered "context too long", a breaker open or a cooldown
(per provider, model and key), and too little of the caller's deadline left. Budgets are taken
separately (chat/budgeting.py), since taking them may need a round trip to Redis.

A block that is only the gateway's own guess (an open breaker, a probe in flight, a suspected stall, a
429 without Retry-After) is advice: the candidate is skipped as `soft`, and when the run has tried
every other candidate without an answer, `last_resort` picks the soft-skipped one whose block ends
soonest for one more attempt, so a route is never shut out on a guess (Envoy's panic threshold); a
suspected stall only for a run that has not yet waited out a first-token timeout. A candidate that
failed earlier in the run may be that last resort too, once its breaker has moved on since (opened,
half-opened or closed): on a provider that flaps, a failure seconds old is old news.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    soft: bool = False  # the gateway's own guess: the candidate may still be tried as a last resort


def skip_reason(
    candidate: Candidate,
    health: Health,
    *,
    need_prefill: bool,
    min_context: int,
    time_left_s: float,
    min_attempt_budget_s: float,
    last_resort: bool = False,
) -> Skip | None:
    """The reason to pass `candidate` over, or None to try it (as a `last_resort`, despite a soft block)."""
    if candidate.adapter is None:
        return Skip(SkipReason.NOT_CONFIGURED, f"set {candidate.provider.credential_source}")
    if need_prefill and not candidate.model.assistant_prefill:
        return Skip(SkipReason.NO_PREFILL, "cannot continue a partial assistant answer")
    window = candidate.model.context_window
    if window and window <= min_context:
        return Skip(SkipReason.CONTEXT_TOO_SMALL, f"context window {window} too small")
    block = health.blocked(candidate.target)
    if block is not None and not (last_resort and not block.hard):
        left = max(0.0, block.until - health.now())
        soft = not block.hard
        if block.kind is None:
            return Skip(SkipReason.UNHEALTHY, f"{block.what} for {left:.3f}s", left, soft)
        return Skip(block.kind, f"cooling down for {left:.3f}s after {block.kind.value}", left, soft)
    if time_left_s < min_attempt_budget_s:
        return Skip(SkipReason.DEADLINE, "less than the minimum attempt budget of the deadline left")
    return None


def last_resort(deferred: Sequence[Candidate], health: Health, *, waited_out_a_stall: bool) -> Candidate | None:
    """Of the candidates skipped on advice, the one to try now: unblocked by now, else the soonest to unblock.

    One suspected of stalling only when the run has not waited out a first-token timeout already: the
    caller would most likely wait out another, and one is all a caller should wait behind stalls.
    """
    if not deferred:
        return None

    def ends(candidate: Candidate) -> float:
        block = health.blocked(candidate.target)
        if block is None:
            return -math.inf
        return math.inf if block.hard or (block.stall and waited_out_a_stall) else block.until

    best = min(deferred, key=ends)
    return best if ends(best) < math.inf else None
