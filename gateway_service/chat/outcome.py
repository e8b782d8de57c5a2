"""How a run that produced no answer ends: which GatewayError, with every attempt in ErrorInfo."""

from __future__ import annotations

from collections.abc import Sequence

from gateway_service.chat.router import Candidate
from gateway_service.config import FailoverSettings
from gateway_service.domain.events import AttemptRecord, SkipReason
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest, DocumentPart, ImagePart
from gateway_service.errors import (
    AllProvidersFailed,
    AllProvidersRateLimited,
    ContextTooLong,
    DeadlineExhausted,
    GatewayError,
    InvalidRequest,
    NotConfigured,
    ProviderRejectedRequest,
)
from gateway_service.health import Health
from servicekit.errors import FieldViolation, QuotaViolation

_RATE_LIMITS = (
    FailureKind.RATE_LIMITED,
    FailureKind.QUOTA_EXHAUSTED,
    SkipReason.BUDGET_EXHAUSTED,
    SkipReason.PREDICTED_RATE_LIMIT,
)
# Skips whose own retry_after_s says when the candidate has room again (health does not block it).
_NO_ROOM = (SkipReason.BUDGET_EXHAUSTED, SkipReason.PREDICTED_RATE_LIMIT)


def attempts_metadata(records: Sequence[AttemptRecord]) -> dict[str, str]:
    """ErrorInfo metadata: `attempt_N` for each attempt made, `skipped_N` for candidates not tried."""
    metadata: dict[str, str] = {}
    tried = skipped = 0
    for record in records:
        if record.attempt:
            tried += 1
            metadata[f"attempt_{record.attempt}"] = record.describe()
        else:
            skipped += 1
            metadata[f"skipped_{skipped}"] = record.describe()
    metadata["attempts"] = str(tried)
    return metadata


def final_error(
    request: ChatRequest,
    records: Sequence[AttemptRecord],
    health: Health,
    candidates: Sequence[Candidate],
    settings: FailoverSettings,
) -> GatewayError:
    """The error for a run where every candidate failed or was skipped."""
    metadata = {"model": request.model, **attempts_metadata(records)}
    tried = [r for r in records if r.attempt]
    outcomes = [r.outcome for r in records if r.outcome is not SkipReason.NOT_CONFIGURED]
    if not outcomes:
        return _not_configured(request, candidates, metadata)
    if all(o is SkipReason.UNSUPPORTED_CONTENT for o in outcomes):
        return _unsupported(request, metadata)
    if tried and tried[-1].outcome is FailureKind.CONTEXT_TOO_LONG:
        return ContextTooLong(
            f"the request does not fit the context window of any candidate for {request.model!r}",
            metadata=metadata,
        )
    summary = "; ".join(r.describe() for r in records)
    if outcomes[-1] is SkipReason.DEADLINE:
        return DeadlineExhausted(f"deadline too short for another attempt after: {summary}", metadata=metadata)
    budgets = [r for r in records if r.outcome is SkipReason.BUDGET_EXHAUSTED]
    retry_after = _retry_after(health, candidates, [r for r in records if r.outcome in _NO_ROOM], settings)
    if not tried:
        summary = f"no candidate can be tried for {retry_after:.3f}s: {summary}"
    if all(o in _RATE_LIMITS for o in outcomes):
        why = summary if not tried else f"every candidate is rate limited: {summary}"
        return AllProvidersRateLimited(
            why,
            metadata=metadata,
            retry_after_s=retry_after,
            quota_violations=[QuotaViolation(f"{r.provider}/{r.model}", r.message) for r in budgets],
        )
    why = summary if not tried else f"every candidate failed: {summary}"
    return AllProvidersFailed(why, metadata=metadata, retry_after_s=retry_after)


def _retry_after(
    health: Health, candidates: Sequence[Candidate], budgets: Sequence[AttemptRecord], settings: FailoverSettings
) -> float:
    """RetryInfo: the time until some candidate can really be tried again.

    The soonest end of a cooldown, breaker, budget or predicted rate limit (`budgets`: those skips); a
    candidate free at once (it failed without being blocked) caps it at rate_limit_cooldown_s, a short pause
    rather than an invitation to retry in a loop.
    """
    blocks = {c.target: health.blocked(c.target) for c in candidates if c.adapter is not None}
    ends = [b.until for b in blocks.values() if b is not None]
    waits = [r.retry_after_s for r in budgets if r.retry_after_s is not None]
    if ends:
        waits.append(max(0.0, min(ends) - health.now()))
    budget_blocked = {(r.provider, r.model) for r in budgets}
    free = any(b is None and t.provider_model not in budget_blocked for t, b in blocks.items())
    if free or not waits:
        waits.append(settings.rate_limit_cooldown_s)
    return min(waits)


def _not_configured(request: ChatRequest, candidates: Sequence[Candidate], metadata: dict[str, str]) -> NotConfigured:
    needs = sorted({f"{c.provider.name} needs {c.provider.credential_source}" for c in candidates})
    return NotConfigured(
        f"no provider of {request.model!r} is configured: " + "; ".join(needs),
        metadata={**metadata, "credentials": ", ".join(c.provider.credential_source for c in candidates)},
    )


def _unsupported(request: ChatRequest, metadata: dict[str, str]) -> InvalidRequest:
    """No candidate can take the request's images or documents: the caller's request, named by its parts."""
    needs = " and ".join(sorted(request.needs))
    violations = [
        FieldViolation(f"messages[{i}].parts[{j}]", f"no candidate of {request.model!r} takes {type(p).__name__}s")
        for i, m in enumerate(request.messages)
        for j, p in enumerate(m.parts)
        if isinstance(p, (ImagePart, DocumentPart))
    ]
    return InvalidRequest(
        f"no candidate of {request.model!r} has the capabilities {needs} its parts need (models' capabilities)",
        metadata=metadata,
        field_violations=violations,
    )


def provider_rejected(candidate: Candidate, error: ProviderError) -> ProviderRejectedRequest:
    """A provider refused the request itself (400): no failover; INVALID_ARGUMENT naming the field when known."""
    return ProviderRejectedRequest(
        f"{candidate.provider.name} rejected the request: {error.message}",
        metadata={"provider": candidate.provider.name, "model": candidate.model.name},
        field_violations=[FieldViolation(error.field, error.message)] if error.field else (),
    )
