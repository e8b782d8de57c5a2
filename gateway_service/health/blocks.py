"""Which failures block a target, hard or soft, and for how long; and the blocks of breakers and stalls.

Hard: what a provider said itself: a Retry-After (429, or 503 with the header), a billing failure (quota)
or an auth failure; the target is never tried before it ends. Auth and quota failures are the key's:
they block every model of the provider under that key (`ANY_MODEL`).

Soft: the gateway's own guess: a 429 without Retry-After, an open breaker (breaker.py), a breaker's probe
in flight, a suspected stall (stalls.py). A soft block is advice; chat/rules.py says when it is ignored.

Failures that were the request's fault say nothing of the provider: no block, no verdict for the breaker.
"""

from __future__ import annotations

from gateway_service.config import FailoverSettings
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.health.breaker import Breaker, Phase
from gateway_service.health.core import Block
from gateway_service.health.stalls import Suspect

REQUEST_FAULTS = (FailureKind.INVALID_REQUEST, FailureKind.CONTEXT_TOO_LONG, FailureKind.CONTENT_FILTERED)
KEY_REFUSED = (FailureKind.AUTH_FAILED, FailureKind.QUOTA_EXHAUSTED)  # the provider shows as MISCONFIGURED
# Failures whose Retry-After, when the provider sent one, is a hard block for that long.
_TOLD_TO_WAIT = (FailureKind.RATE_LIMITED, FailureKind.OVERLOADED, FailureKind.SERVER_ERROR)


def cooldown(error: ProviderError, settings: FailoverSettings, now: float) -> Block | None:
    """The cooldown a failure starts; hard when the provider said how long (or the key is refused)."""
    kind, told = error.kind, error.retry_after_s
    if kind is FailureKind.QUOTA_EXHAUSTED:
        return Block(kind, now + max(told or 0.0, settings.quota_cooldown_s), hard=True)
    if kind is FailureKind.AUTH_FAILED:
        return Block(kind, now + settings.auth_cooldown_s, hard=True)
    if told is not None and kind in _TOLD_TO_WAIT:
        return Block(kind, now + told, hard=True)
    if kind is FailureKind.RATE_LIMITED:
        return Block(kind, now + settings.rate_limit_cooldown_s)
    return None


def breaker_block(breaker: Breaker, now: float) -> Block | None:
    phase = breaker.phase(now)
    if phase is Phase.OPEN:
        assert breaker.open_until is not None
        return Block(None, breaker.open_until)
    if phase is Phase.HALF_OPEN and breaker.probe_until is not None:
        return Block(None, max(now, breaker.probe_until), what="circuit breaker half-open, its probe running")
    return None


def stall_block(suspect: Suspect, now: float) -> Block:
    what = f"suspected stall ({suspect.waited_s:.3f}s without a first token, usually {suspect.usual_s:.3f}s)"
    return Block(None, max(now, suspect.until), what=what, stall=True)
