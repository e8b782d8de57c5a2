"""What the pipeline tells the caller, in order (no gRPC): the domain side of StreamChatResponse.

A run yields AttemptStarted, then OutputDelta / AttemptUsage, and on a failed attempt FailedOver
followed by the next AttemptStarted; it ends with exactly one Completed or raises a GatewayError.
Candidates skipped without a request (SkipReason, or a cooldown's FailureKind) ride on the next
AttemptStarted, so a successful call can say why they were not tried.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from gateway_service.domain.failures import FailureKind
from gateway_service.domain.request import FinishReason, ReasoningDelta, TextDelta, ToolCallDelta


class SkipReason(enum.Enum):
    """Why a candidate was not tried at all (no HTTP request was made)."""

    NOT_CONFIGURED = "not_configured"
    UNHEALTHY = "unhealthy"  # breaker open
    CONTEXT_TOO_SMALL = "context_too_small"
    NO_PREFILL = "no_prefill"  # cannot continue a partial answer (mid-stream policy CONTINUE)
    DEADLINE = "deadline"  # less than the minimum attempt budget left
    BUDGET_EXHAUSTED = "budget_exhausted"  # its configured rate-limit budget (limits:) has no room now
    PREDICTED_RATE_LIMIT = "predicted_rate_limit"  # its provider's rate-limit headers left no room for it
    UNSUPPORTED_CONTENT = "unsupported_content"  # the model cannot take an image or document part (capabilities)


Outcome = FailureKind | SkipReason


@dataclass(frozen=True)
class AttemptStarted:
    provider: str
    model: str
    attempt: int
    skipped: tuple[AttemptRecord, ...] = ()  # candidates skipped since the previous attempt (or the start)
    policy: str = ""  # the routing policy that placed this target (chat/policies.py), or "caller_order"
    score: float | None = None  # its score under that policy (None: nothing to score it by)
    hedge: bool = False  # started alongside an attempt with no output after the route's hedge delay


@dataclass(frozen=True)
class OutputDelta:
    """One piece of output; `sequence` counts from 1 across attempts."""

    sequence: int
    piece: TextDelta | ReasoningDelta | ToolCallDelta


@dataclass(frozen=True)
class FailedOver:
    from_provider: str
    from_model: str
    to_provider: str
    to_model: str
    reason: FailureKind
    message: str
    discard_output: bool
    attempt: int


@dataclass(frozen=True)
class AttemptUsage:
    provider: str
    model: str
    attempt: int
    input_tokens: int  # all input, cached and cache writes included
    output_tokens: int  # all output, reasoning included
    cost_usd: Decimal
    reasoning_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: bool = False  # counted by the gateway (attempt cut short), not reported by the provider
    price_version: str = ""


@dataclass(frozen=True)
class Completed:
    finish_reason: FinishReason
    provider: str
    model: str
    attempts: int
    upstream_request_id: str
    request_id: str
    usage: AttemptUsage | None = None  # every attempt's usage summed: what the call cost
    hedge_won: bool = False  # the answer came from a hedge (AttemptStarted.hedge), not the attempt it hedged


GatewayEvent = AttemptStarted | OutputDelta | FailedOver | AttemptUsage | Completed


@dataclass
class AttemptRecord:
    """One attempt (or skipped candidate) as reported in ChatResponse.attempts and ErrorInfo."""

    attempt: int  # 0 for a skipped candidate
    provider: str
    model: str
    outcome: Outcome | None = None  # None: succeeded
    message: str = ""
    duration_s: float = 0.0
    usage: AttemptUsage | None = None
    retry_after_s: float | None = None
    hedge: bool = False  # this attempt was a hedge (chat/hedging.py)

    def describe(self) -> str:
        reason = self.outcome.value if self.outcome else "ok"
        text = f"{self.provider}/{self.model} {reason}"
        return f"{text}: {self.message}" if self.message else text
