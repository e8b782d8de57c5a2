"""What one attempt is reported as: its record and its usage (provider-reported, or estimated when cut short)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TypeGuard

from gateway_service.accounting import cost_usd, estimate_tokens
from gateway_service.chat.attempt import Attempt
from gateway_service.chat.router import Candidate
from gateway_service.domain.events import AttemptRecord, AttemptUsage, FailedOver
from gateway_service.domain.failures import ProviderError
from gateway_service.domain.request import ChatRequest


@dataclass
class Pending:
    """A failed attempt whose FailedOver event waits for the next candidate's name."""

    record: AttemptRecord
    error: ProviderError
    discard: bool  # the caller must discard the output it holds (RESTART after output)

    def failed_over(self, to: Candidate) -> FailedOver:
        record = self.record
        return FailedOver(
            record.provider, record.model, to.provider.name, to.model.name,
            self.error.kind, self.error.message, self.discard, record.attempt,
        )  # fmt: skip


def attempt_record(
    candidate: Candidate, attempt: Attempt, number: int, error: ProviderError | None, cancelled: bool
) -> AttemptRecord:
    return AttemptRecord(
        attempt=number,
        provider=candidate.provider.name,
        model=candidate.model.name,
        outcome=error.kind if error else None,
        message=error.message if error else ("cancelled" if cancelled else ""),
        duration_s=time.monotonic() - attempt.state.started,
        usage=attempt_usage(candidate, attempt, number),
        retry_after_s=error.retry_after_s if error else None,
    )


def attempt_usage(candidate: Candidate, attempt: Attempt, number: int) -> AttemptUsage | None:
    """Usage the provider reported, else an estimate from what was received (None when nothing was)."""
    usage, state = attempt.state.usage, attempt.state
    if usage is None and not state.pieces_received:
        return None
    input_tokens = usage.input_tokens if usage else estimate_tokens(_request_chars(attempt.request))
    output_tokens = usage.output_tokens if usage else estimate_tokens(state.chars_received)
    return AttemptUsage(
        provider=candidate.provider.name,
        model=candidate.model.name,
        attempt=number,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd(candidate.model, input_tokens, output_tokens),
        reasoning_tokens=usage.reasoning_tokens if usage else 0,
        cached_input_tokens=usage.cached_input_tokens if usage else 0,
        estimated=usage is None,
    )


def reported(usage: AttemptUsage | None) -> TypeGuard[AttemptUsage]:
    """Only usage the provider reported goes to the caller; estimates go to logs, metrics and the ledger."""
    return usage is not None and not usage.estimated


def _request_chars(request: ChatRequest) -> int:
    return sum(len(m.content) for m in request.messages)
