"""Runs a request across its candidates until one answers: the failover state machine.

Before any output reached the caller, a retryable failure moves to the next candidate at once
(a FailedOver event, then AttemptStarted). After output was sent, the request's mid-stream
policy decides: FAIL ends with MidStreamFailure, RESTART tells the caller to discard and starts
over, CONTINUE has the next candidate continue from the partial answer as an assistant prefill.

The caller's deadline is split: each attempt's first token must come within its share
(remaining / candidates left, at least `min_attempt_budget_s`), and no attempt starts with less
than that minimum left. Output, once flowing, may use the whole remaining deadline.

Rate-limit budgets, when configured, are taken through a RunBudget (chat/budgeting.py): the user's
before anything else, each candidate's just before its attempt (skipped like a cooldown without room).
Skipped candidates are kept as records with attempt number 0 and ride on the next AttemptStarted.
When nothing answered, one candidate skipped only on the gateway's own guess (an open breaker, a
probe in flight, a suspected stall) gets a last try (chat/skips.py `last_resort`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, replace

from opentelemetry import trace
from opentelemetry.trace import Span

from gateway_service.accounting import Ledger
from gateway_service.breaker import Phase
from gateway_service.chat import spans
from gateway_service.chat.attempt import Attempt, Limits, Piece
from gateway_service.chat.budgeting import RunBudget
from gateway_service.chat.outcome import final_error, mid_stream_failure
from gateway_service.chat.records import attempt_record, reported
from gateway_service.chat.router import Candidate
from gateway_service.chat.skips import Skip, last_resort, skip_reason
from gateway_service.config import FailoverSettings
from gateway_service.domain.events import (
    AttemptRecord,
    AttemptStarted,
    Completed,
    FailedOver,
    GatewayEvent,
    OutputDelta,
)
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import (
    ChatRequest,
    FinishReason,
    Message,
    MidStreamPolicy,
    Role,
    TextDelta,
    ToolCallDelta,
)
from gateway_service.errors import ProviderRejectedRequest
from gateway_service.health import Health, Ticket
from gateway_service.limits.budgets import Budgets
from servicekit.errors import FieldViolation

log = logging.getLogger(__name__)

AttemptObserver = Callable[[ChatRequest, AttemptRecord, "float | None"], None]


class _AttemptFailed(Exception):
    """Carries a ProviderError out of an attempt together with the attempt's state."""

    def __init__(self, error: ProviderError, attempt: Attempt, number: int, ticket: Ticket) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempt = attempt
        self.number = number
        self.ticket = ticket


@dataclass
class _Pending:
    """A failed attempt whose FailedOver event waits for the next candidate's name."""

    record: AttemptRecord
    error: ProviderError
    discard: bool


class ChatRun:
    """One request's run; `events()` drives it, `attempts` lists what was tried."""

    def __init__(
        self, failover: Failover, request: ChatRequest, candidates: list[Candidate], deadline_s: float | None
    ) -> None:
        self.failover = failover
        self.request = request
        self.candidates = candidates
        self.settings = failover.settings
        self.deadline = time.monotonic() + (deadline_s if deadline_s is not None else self.settings.default_deadline_s)
        self.records: list[AttemptRecord] = []
        self.sequence = 0
        self.prefix: list[str] = []  # text delivered in the current answer (for CONTINUE)
        self.tool_calls_sent = False
        self.answer_pieces = 0  # pieces the caller holds of the current answer (reset by RESTART)
        self._min_context = 0
        self._need_prefill = False
        self._new_skips = 0  # records at the end of `records` skipped since the last attempt started
        self._spans: dict[int, Span] = {}  # attempt number -> its trace span, until the attempt's record
        self._deferred: list[Candidate] = []  # skipped on the gateway's own guess: a last resort
        self._failed: list[tuple[Candidate, tuple[int, Phase]]] = []  # and the breaker's state right after
        budgets = failover.budgets
        self.budget = RunBudget(budgets, request) if budgets is not None else None

    @property
    def attempts(self) -> list[AttemptRecord]:
        return [r for r in self.records if r.attempt]

    @property
    def skipped(self) -> list[AttemptRecord]:
        return [r for r in self.records if not r.attempt]

    def events(self) -> AsyncGenerator[GatewayEvent, None]:
        if self.budget is not None and self.budget.settles_user:
            return self._user_budgeted(self.budget)
        return self._candidate_events()  # no layer in between unless a user's tokens are to be squared

    async def _user_budgeted(self, budget: RunBudget) -> AsyncGenerator[GatewayEvent, None]:
        try:
            async with aclosing(self._candidate_events()) as events:
                async for event in events:
                    yield event
        finally:
            budget.call_ended(self.records)

    async def _candidate_events(self) -> AsyncGenerator[GatewayEvent, None]:
        pending: _Pending | None = None
        request = self.request
        for candidate, candidates_left, advice_ignored in self._tries():
            if self._skip(candidate, advice_ignored) or (
                self.budget is not None and not await self._take_budget(candidate)
            ):
                continue
            number = len(self.attempts) + 1
            failed_over = self._failed_over(pending, candidate) if pending is not None else None
            try:
                attempt = self._attempt(candidate, request, number, candidates_left, failed_over)
                async with aclosing(attempt) as events:
                    async for event in events:
                        yield event
                return
            except _AttemptFailed as failed:
                pending = self._after_failure(candidate, failed)
                if reported(pending.record.usage):
                    yield pending.record.usage
                if failed.error.kind is FailureKind.CONTENT_FILTERED:
                    yield self._completed(candidate, FinishReason.CONTENT_FILTER, failed.error.upstream_request_id)
                    return
                request = self._next_request(pending)
        # Output was delivered and never retracted (no candidate left to take over): it must not pass for whole.
        if pending is not None and (self.answer_pieces or pending.discard):
            why = f"no candidate left to {self.request.mid_stream_policy.value} the answer"
            raise mid_stream_failure(pending.record, self.sequence, self.records, why)
        if self.budget is not None:
            await self.budget.take_user()  # over budget is the answer even when no candidate could be tried
        raise final_error(self.request, self.records, self.failover.health, self.candidates, self.settings)

    def _tries(self) -> Iterator[tuple[Candidate, int, bool]]:
        """(candidate, candidates left, advice ignored): the route in order, then one last resort if any."""
        for index, candidate in enumerate(self.candidates):
            yield candidate, len(self.candidates) - index, False
        # Never fail on the gateway's own guess alone: one candidate skipped on advice is tried after all, or
        # one that failed earlier whose breaker has moved on since (its failure is old news by now).
        health = self.failover.health
        stale = [c for c, state in self._failed if health.breaker_state(c.provider.name, c.model.name) != state]
        waited = any(r.outcome is FailureKind.TIMEOUT for r in self.attempts)
        fallback = last_resort([*self._deferred, *stale], health, waited_out_a_stall=waited)
        if fallback is not None:
            yield fallback, 1, True

    def _skip(self, candidate: Candidate, advice_ignored: bool) -> bool:
        skip = skip_reason(
            candidate, self.failover.health, need_prefill=self._need_prefill, min_context=self._min_context,
            time_left_s=self.deadline - time.monotonic(), min_attempt_budget_s=self.settings.min_attempt_budget_s,
            last_resort=advice_ignored,
        )  # fmt: skip
        if skip is None:
            return False
        if advice_ignored:
            return True  # recorded when it was first skipped
        if skip.soft:
            self._deferred.append(candidate)
        self._record_skip(candidate, skip)
        return True

    async def _take_budget(self, candidate: Candidate) -> bool:
        """Take the candidate's budget (and the user's, the first time); False when it had no room."""
        assert self.budget is not None
        skip = await self.budget.take(candidate)
        if skip is None:
            return True
        self._record_skip(candidate, skip)
        return False

    def _record_skip(self, candidate: Candidate, skip: Skip) -> None:
        """A skipped candidate is a record with attempt number 0; it rides on the next AttemptStarted."""
        name, model = candidate.provider.name, candidate.model.name
        self.records.append(AttemptRecord(0, name, model, skip.reason, skip.message, retry_after_s=skip.retry_after_s))
        self._new_skips += 1

    def _skipped_since_last_attempt(self) -> tuple[AttemptRecord, ...]:
        # A counter rather than a scan or a list: the usual request skips nothing and pays for nothing.
        count, self._new_skips = self._new_skips, 0
        return tuple(self.records[-count:]) if count else ()

    async def _attempt(
        self, candidate: Candidate, request: ChatRequest, number: int, candidates_left: int,
        failed_over: FailedOver | None,
    ) -> AsyncGenerator[GatewayEvent, None]:  # fmt: skip
        limits = Limits.share(candidate, self.request, self.settings, self.deadline, candidates_left)
        health = self.failover.health
        patience_s = limits.first_token_by - asyncio.get_running_loop().time()
        ticket = health.admit(candidate.provider.name, candidate.model.name, candidate.key_id, patience_s)
        attempt = Attempt(candidate, request, limits, on_first_token=lambda: health.first_token(ticket))
        skipped = self._skipped_since_last_attempt()
        span = self._spans[number] = spans.start(
            self.failover.tracer, candidate.provider.type, candidate.provider.name, candidate.model.name, request
        )
        # The upstream request leaves before the caller is told, so telling it costs no time to first token:
        # one loop turn lets the read task open() started get the request onto the wire before our writes.
        # The span is current while the read task is created, so the HTTP request is traced under it.
        with trace.use_span(span, end_on_exit=False):
            attempt.open()
        try:
            await asyncio.sleep(0)
            if failed_over is not None:
                self.failover.report_failover(failed_over)  # here, not before open(): off the way to the next request
                yield failed_over
            yield AttemptStarted(candidate.provider.name, candidate.model.name, number, skipped)
            async with aclosing(attempt.pieces()) as pieces:
                async for piece in pieces:
                    yield self._delivered(piece)
        except ProviderError as error:
            raise _AttemptFailed(error, attempt, number, ticket) from error
        except BaseException:
            # Cancelled, deadline passed or the caller went away: upstream is closed; count what it cost.
            await attempt.close()
            self._record(candidate, attempt, number, None, ticket, cancelled=True)
            raise
        finally:
            await attempt.close()
        record = self._record(candidate, attempt, number, None, ticket)
        if reported(record.usage):
            yield record.usage
        finished = attempt.state.finished
        assert finished is not None
        yield self._completed(candidate, finished.reason, finished.upstream_request_id)

    def _delivered(self, piece: Piece) -> OutputDelta:
        self.sequence += 1
        self.answer_pieces += 1
        if isinstance(piece, TextDelta):
            self.prefix.append(piece.text)
        elif isinstance(piece, ToolCallDelta):
            self.tool_calls_sent = True
        return OutputDelta(self.sequence, piece)

    def _after_failure(self, candidate: Candidate, failed: _AttemptFailed) -> _Pending:
        error = failed.error
        record = self._record(candidate, failed.attempt, failed.number, error, failed.ticket)
        delivered = self.answer_pieces > 0
        if error.kind is FailureKind.INVALID_REQUEST:
            raise ProviderRejectedRequest(
                f"{candidate.provider.name} rejected the request: {error.message}",
                metadata={"provider": candidate.provider.name, "model": candidate.model.name},
                field_violations=[FieldViolation(error.field, error.message)] if error.field else (),
            )
        if error.kind is FailureKind.CONTEXT_TOO_LONG:
            self._min_context = max(self._min_context, candidate.model.context_window or 1)
        policy = self.request.mid_stream_policy
        if delivered and error.kind is not FailureKind.CONTENT_FILTERED:
            if policy is MidStreamPolicy.FAIL:
                raise mid_stream_failure(record, self.sequence, self.records, "policy FAIL")
            if policy is MidStreamPolicy.CONTINUE and self.tool_calls_sent:
                raise mid_stream_failure(record, self.sequence, self.records, "CONTINUE refused after tool-call deltas")
            if policy is MidStreamPolicy.CONTINUE:
                self._need_prefill = True
            else:
                self.prefix.clear()
                self.tool_calls_sent = False
                self.answer_pieces = 0
        return _Pending(record, error, discard=delivered and policy is MidStreamPolicy.RESTART)

    def _next_request(self, pending: _Pending) -> ChatRequest:
        if not self._need_prefill or not self.prefix:
            return self.request
        # Anthropic refuses a final assistant turn ending in whitespace; the answer resumes after it.
        prefill = "".join(self.prefix).rstrip()
        messages = (*self.request.messages, Message(Role.ASSISTANT, content=prefill))
        return replace(self.request, messages=messages)

    def _record(
        self, candidate: Candidate, attempt: Attempt, number: int, error: ProviderError | None, ticket: Ticket,
        cancelled: bool = False,
    ) -> AttemptRecord:  # fmt: skip
        record = attempt_record(candidate, attempt, number, error, cancelled)
        self.records.append(record)
        finished = attempt.state.finished
        span = self._spans.pop(number, None)
        if span is not None:
            spans.end(span, record, finished.reason.value if finished else None)
        if self.budget is not None:
            self.budget.attempt_ended(record)
        self.failover.note(self.request, candidate, record, error, attempt.state.first_token_s, ticket, cancelled)
        if error is not None:
            state = self.failover.health.breaker_state(candidate.provider.name, candidate.model.name)
            self._failed.append((candidate, state))
        return record

    def _failed_over(self, pending: _Pending, to: Candidate) -> FailedOver:
        record = pending.record
        return FailedOver(
            record.provider, record.model, to.provider.name, to.model.name,
            pending.error.kind, pending.error.message, pending.discard, record.attempt,
        )  # fmt: skip

    def _completed(self, candidate: Candidate, reason: FinishReason, upstream_request_id: str) -> Completed:
        return Completed(
            reason, candidate.provider.name, candidate.model.name, len(self.attempts),
            upstream_request_id, self.request.request_id,
        )  # fmt: skip


class Failover:
    """Shared across requests: settings, health, the ledger and an observer told about each attempt."""

    def __init__(
        self, settings: FailoverSettings, health: Health, ledger: Ledger, observer: AttemptObserver | None = None,
        budgets: Budgets | None = None, tracer: trace.Tracer | None = None,
        on_failover: Callable[[FailedOver], None] | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.health = health
        self.ledger = ledger
        self.observer = observer
        self.budgets = budgets
        self.tracer = tracer or trace.NoOpTracer()
        self.on_failover = on_failover

    def report_failover(self, event: FailedOver) -> None:
        log.warning(
            "attempt failed, failing over",
            extra={"from": f"{event.from_provider}/{event.from_model}", "to": f"{event.to_provider}/{event.to_model}",
                   "reason": event.reason.value, "error": event.message, "attempt": event.attempt},
        )  # fmt: skip
        if self.on_failover is not None:
            self.on_failover(event)

    def run(self, request: ChatRequest, candidates: list[Candidate], deadline_s: float | None) -> ChatRun:
        return ChatRun(self, request, candidates, deadline_s)

    def note(
        self, request: ChatRequest, candidate: Candidate, record: AttemptRecord,
        error: ProviderError | None, first_token_s: float | None, ticket: Ticket, cancelled: bool,
    ) -> None:  # fmt: skip
        """Health, ledger, log and telemetry for a finished attempt; never blocks."""
        name, model = candidate.provider.name, candidate.model.name
        if error is not None:
            self.health.record_failure(ticket, error, record.duration_s)
        elif cancelled:
            self.health.record_cancelled(ticket)
        else:
            self.health.record_success(ticket, first_token_s, record.duration_s)
        if record.usage is not None:
            self.ledger.add(name, record.usage.input_tokens, record.usage.output_tokens, record.usage.cost_usd)
        if cancelled:
            usage = record.usage
            log.info(
                "attempt cancelled; upstream closed",
                extra={"provider": name, "model": model, "attempt": record.attempt,
                       "output_tokens_so_far": usage.output_tokens if usage else 0,
                       "usage_estimated": usage.estimated if usage else False},
            )  # fmt: skip
        if self.observer is not None:
            self.observer(request, record, first_token_s)
