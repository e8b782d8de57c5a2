"""The failover decision, rule by rule: what is skipped, what blocks hard, the last resort, what ends a call.

Failover (failover.py) walks the route's candidates in order and applies these rules; the modules named
carry them out.

1. Skipped, without a request, checked in this order before each attempt (`skip_reason`):
   no credentials; a part the model cannot take (an image without `vision`, a document without
   `documents` in its capabilities); a CONTINUE that needs an assistant prefill the model cannot take;
   a context window no larger than one that already answered "context too long"; a block of its target
   in health (a cooldown per provider, model and key, an open breaker, a probe in flight, a suspected
   stall); headroom its provider's rate-limit headers left that cannot take the request's estimated
   tokens (health/headroom.py: a predicted rate limit, skipped before any 429); less than
   `min_attempt_budget_s` of the caller's deadline left. Then its rate-limit budgets are taken
   (budgeting.py, apart since taking them may need a round trip to Redis): one without room is skipped.
2. A hard block is what the provider said itself: a Retry-After, a billing failure, a refused key
   (health/blocks.py), no requests or tokens left by its headers. It is never tried before it ends, not
   even as the last resort. Every other block is the gateway's own guess, and only advice: the candidate
   is skipped as `soft`.
3. The last resort (`last_resort`): once the route is done without an answer, one more attempt goes to a
   soft-skipped candidate, or to one that failed earlier in the run whose breaker has moved on since
   (opened, half-opened or closed: on a provider that flaps, a failure seconds old is old news). The one
   unblocked by now, else the one whose block ends soonest; a suspected stall only for a run that has not
   yet waited out a first-token timeout. So a route is never shut out on a guess (Envoy's panic threshold).
4. A failure ends the call, or hands it to the next candidate (`after_failure`):
   the provider refused the request itself (400): the call ends, INVALID_ARGUMENT (outcome.py);
   a content filter: the call ends with finish reason CONTENT_FILTER;
   after output reached the caller, the mid-stream policy decides (midstream.py): FAIL, or CONTINUE
   after tool-call deltas, ends the call with MidStreamFailure; RESTART and CONTINUE go on;
   "context too long": the next candidates need a larger context window (rule 1);
   any other failure: the next candidate at once.
   No candidate left: the call ends with the error that sums up every attempt and skip (outcome.py), and
   output delivered but never retracted ends it as MidStreamFailure (midstream.py).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway_service.chat.router import Candidate
from gateway_service.domain.events import SkipReason
from gateway_service.domain.failures import FailureKind
from gateway_service.health import BreakerState, Health, Need


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
    need: Need | None = None,
    last_resort: bool = False,
    capabilities: frozenset[str] = frozenset(),
) -> Skip | None:
    """Rules 1 and 2: the reason to pass `candidate` over, or None to try it (as a `last_resort`, despite a
    soft block)."""
    if candidate.adapter is None:
        return Skip(SkipReason.NOT_CONFIGURED, f"set {candidate.provider.credential_source}")
    missing = capabilities.difference(candidate.model.capabilities)
    if missing:
        return Skip(SkipReason.UNSUPPORTED_CONTENT, f"cannot take {' or '.join(sorted(missing))} parts (capabilities)")
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
    short = health.headroom.shortage(candidate.target, need) if need is not None else None
    if short is not None and not (last_resort and not short.hard):
        left = max(0.0, short.until - health.now())
        return Skip(SkipReason.PREDICTED_RATE_LIMIT, short.what, left, soft=not short.hard)
    if time_left_s < min_attempt_budget_s:
        return Skip(SkipReason.DEADLINE, "less than the minimum attempt budget of the deadline left")
    return None


def last_resort(
    deferred: Sequence[Candidate],
    failed: Sequence[tuple[Candidate, BreakerState]],
    health: Health,
    *,
    waited_out_a_stall: bool,
) -> Candidate | None:
    """Rule 3: of the candidates skipped on advice, and those that failed (with their breaker's state right
    after) whose breaker has moved on since, the one to try now: unblocked by now, else the soonest to unblock.

    One suspected of stalling only when the run has not waited out a first-token timeout already: the
    caller would most likely wait out another, and one is all a caller should wait behind stalls.
    """
    stale = [c for c, state in failed if health.breaker_state(c.target) != state]
    pool = [*deferred, *stale]
    if not pool:
        return None

    def ends(candidate: Candidate) -> float:
        block = health.blocked(candidate.target)
        if block is None:
            return -math.inf
        return math.inf if block.hard or (block.stall and waited_out_a_stall) else block.until

    best = min(pool, key=ends)
    return best if ends(best) < math.inf else None


class Ending(enum.Enum):
    """How a failure ends the call by itself, whatever candidates are left."""

    REJECTED = "rejected"  # the provider refused the request itself: INVALID_ARGUMENT
    FILTERED = "filtered"  # a content filter: the call completes with finish reason CONTENT_FILTER


@dataclass(frozen=True)
class AfterFailure:
    """Rule 4 for one failure kind."""

    ends: Ending | None = None  # None: the next candidate takes over, if one is left
    mid_stream: bool = True  # the mid-stream policy applies to output already sent
    larger_context: bool = False  # the next candidates need a larger context window


_AFTER_FAILURE = {
    FailureKind.INVALID_REQUEST: AfterFailure(ends=Ending.REJECTED),
    FailureKind.CONTENT_FILTERED: AfterFailure(ends=Ending.FILTERED, mid_stream=False),
    FailureKind.CONTEXT_TOO_LONG: AfterFailure(larger_context=True),
}
_FAIL_OVER = AfterFailure()


def after_failure(kind: FailureKind) -> AfterFailure:
    """Rule 4: what a failure of this kind does to the call."""
    return _AFTER_FAILURE.get(kind, _FAIL_OVER)
