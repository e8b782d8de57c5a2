"""What one attempt is reported as: its record, its usage (provider-reported, or estimated when cut short), and
its ledger entry (what the usage feed sends to the schema service's ledger)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeGuard

from gateway_service.accounting import Tokens, count_tokens, openai_family, price_of
from gateway_service.chat.attempt import Attempt
from gateway_service.chat.router import Candidate
from gateway_service.chat.rules import Ending, Skip
from gateway_service.domain.events import AttemptRecord, AttemptUsage, Completed, FailedOver
from gateway_service.domain.failures import ProviderError
from gateway_service.domain.request import ChatRequest, FinishReason, UsageReport
from gateway_service.health import Ticket


class AttemptFailed(Exception):
    """Carries a ProviderError out of an attempt together with the attempt's state."""

    def __init__(self, error: ProviderError, attempt: Attempt, number: int, ticket: Ticket) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempt = attempt
        self.number = number
        self.ticket = ticket


class Records(list[AttemptRecord]):
    """A run's attempts and skipped candidates, in order; the skips since the last attempt ride on the next."""

    def __init__(self) -> None:
        super().__init__()
        self._new_skips = 0  # records at the end skipped since the last attempt started

    @property
    def attempts(self) -> list[AttemptRecord]:
        return [r for r in self if r.attempt]

    @property
    def skipped(self) -> list[AttemptRecord]:
        return [r for r in self if not r.attempt]

    def skip(self, candidate: Candidate, skip: Skip) -> None:
        """A skipped candidate is a record with attempt number 0; it rides on the next AttemptStarted."""
        name, model = candidate.provider.name, candidate.model.name
        self.append(AttemptRecord(0, name, model, skip.reason, skip.message, retry_after_s=skip.retry_after_s))
        self._new_skips += 1

    def skipped_since_last_attempt(self) -> tuple[AttemptRecord, ...]:
        # A counter rather than a scan or a list: the usual request skips nothing and pays for nothing.
        count, self._new_skips = self._new_skips, 0
        return tuple(self[-count:]) if count else ()

    def completed(self, candidate: Candidate, reason: FinishReason, upstream_id: str, request_id: str) -> Completed:
        name, model = candidate.provider.name, candidate.model.name
        return Completed(reason, name, model, len(self.attempts), upstream_id, request_id, total_usage(self))


@dataclass(frozen=True)
class LedgerEntry:
    """One attempt as the usage ledger keeps it: who asked, with which key, when, and how it ended."""

    request: ChatRequest  # request_id, caller and user_id
    record: AttemptRecord  # provider, model, attempt number, outcome, duration and usage
    key_id: str  # the credential's hash (ProviderSpec.key_id), never the key
    start_time_ns: int  # wall clock, nanoseconds since the epoch: part of the row's identity
    first_token_s: float | None
    cancelled: bool

    @property
    def failover(self) -> bool:
        """Any attempt after the first followed a failed one, but a hedge (started beside the one before)."""
        return self.record.attempt > 1 and not self.record.hedge


@dataclass
class Pending:
    """A failed attempt whose FailedOver event waits for the next candidate's name."""

    record: AttemptRecord
    error: ProviderError
    discard: bool  # the caller must discard the output it holds (RESTART after output)
    ends: Ending | None = None  # the failure ends the call by itself (chat/rules.py, rule 4)

    def failed_over(self, to: Candidate) -> FailedOver:
        record = self.record
        return FailedOver(
            record.provider,
            record.model,
            to.provider.name,
            to.model.name,
            self.error.kind,
            self.error.message,
            self.discard,
            record.attempt,
        )


def attempt_record(
    candidate: Candidate,
    attempt: Attempt,
    number: int,
    error: ProviderError | None,
    cancelled: bool,
    raced: bool = False,
) -> AttemptRecord:
    return AttemptRecord(
        attempt=number,
        provider=candidate.provider.name,
        model=candidate.model.name,
        outcome=error.kind if error else None,
        message=error.message if error else ("cancelled" if cancelled else ""),
        duration_s=time.monotonic() - attempt.state.started,
        usage=attempt_usage(candidate, attempt, number, raced),
        retry_after_s=error.retry_after_s if error else None,
    )


def attempt_usage(candidate: Candidate, attempt: Attempt, number: int, raced: bool = False) -> AttemptUsage | None:
    """Usage the provider reported, else an estimate from what was received (None when nothing was, unless
    the attempt `raced` a hedge: both of a hedged pair are costed, the loser at least for its input)."""
    usage, state = attempt.state.usage, attempt.state
    if usage is None and not state.pieces_received and not raced:
        return None
    if usage is None:
        openai = openai_family(candidate.model.name)
        input_tokens = count_tokens(_request_text(attempt.request), openai=openai)
        usage = UsageReport(input_tokens, count_tokens(attempt.received_text(), openai=openai))
        estimated = True
    else:
        estimated = False
    price = price_of(candidate.model)
    return AttemptUsage(
        provider=candidate.provider.name,
        model=candidate.model.name,
        attempt=number,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=price.cost(Tokens.of(usage)),
        reasoning_tokens=usage.reasoning_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        estimated=estimated,
        price_version=price.version,
    )


def total_usage(records: list[AttemptRecord]) -> AttemptUsage:
    """Every attempt's usage summed, estimated ones included (what the call cost); provider and model empty."""
    usages = [r.usage for r in records if r.usage is not None]
    return AttemptUsage(
        provider="",
        model="",
        attempt=0,
        input_tokens=sum(u.input_tokens for u in usages),
        output_tokens=sum(u.output_tokens for u in usages),
        cost_usd=sum((u.cost_usd for u in usages), Decimal(0)),
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
        cached_input_tokens=sum(u.cached_input_tokens for u in usages),
        cache_write_tokens=sum(u.cache_write_tokens for u in usages),
        estimated=any(u.estimated for u in usages),
    )


def reported(usage: AttemptUsage | None) -> TypeGuard[AttemptUsage]:
    """Only usage the provider reported goes to the caller; estimates go to logs, metrics and the ledger."""
    return usage is not None and not usage.estimated


def request_chars(request: ChatRequest) -> int:
    return sum(len(m.content) for m in request.messages)


def _request_text(request: ChatRequest) -> str:
    return "".join(m.content for m in request.messages)
