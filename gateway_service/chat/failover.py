"""Runs a request across its candidates until one answers: the failover state machine.

Before any output reached the caller, a retryable failure moves to the next candidate at once
(a FailedOver event, then AttemptStarted). After output was sent, the request's mid-stream
policy decides (FAIL, RESTART or CONTINUE; chat/midstream.py keeps what was sent and applies it).

The caller's deadline is split: each attempt's first token must come within its share
(remaining / candidates left, at least `min_attempt_budget_s`), and no attempt starts with less
than that minimum left. Output, once flowing, may use the whole remaining deadline.

Which candidate is skipped, what blocks hard, the last resort and which failure ends the call are the
rules of chat/rules.py, in order; this module applies them. Rate-limit budgets, when configured, are
taken through a RunBudget (chat/budgeting.py): the user's before anything else, each candidate's just
before its attempt. Skipped candidates are kept as records with attempt number 0 and ride on the next
AttemptStarted. A route with a hedge delay races an attempt without output against the next candidate
(chat/hedging.py).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import aclosing
from dataclasses import replace
from functools import partial

from opentelemetry import trace
from opentelemetry.trace import Span

from gateway_service.accounting import Ledger, estimate_tokens
from gateway_service.chat import spans
from gateway_service.chat.attempt import Attempt, AttemptTiming
from gateway_service.chat.budgeting import RunBudget
from gateway_service.chat.hedging import Events, HedgeAfter, Outrun, Race, race
from gateway_service.chat.midstream import Delivered
from gateway_service.chat.outcome import final_error, provider_rejected
from gateway_service.chat.records import (
    AttemptFailed,
    Pending,
    Records,
    attempt_record,
    reported,
    request_chars,
    total_usage,
)
from gateway_service.chat.reporting import AttemptObserver, FailoverObserver, Reporter, UsageObserver
from gateway_service.chat.router import Candidate, Ranking
from gateway_service.chat.rules import Ending, Skip, after_failure, last_resort, skip_reason
from gateway_service.chat.spending import RunSpend
from gateway_service.config import FailoverSettings
from gateway_service.domain.events import (
    AttemptRecord,
    AttemptStarted,
    Completed,
    FailedOver,
    GatewayEvent,
    SkipReason,
)
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest, FinishReason
from gateway_service.errors import GatewayError
from gateway_service.health import BreakerState, Health, Need, Ticket
from gateway_service.limits.budgets import Budgets
from gateway_service.limits.shares import RETRY_AFTER_S as SHARE_RETRY_AFTER_S
from gateway_service.limits.shares import ConnectionShares, Release, share_of
from gateway_service.limits.spend import Spend


class ChatRun:
    """One request's run; `events()` drives it, `attempts` lists what was tried."""

    def __init__(self, failover: Failover, request: ChatRequest, ranking: Ranking, deadline_s: float | None) -> None:
        self.failover = failover
        self.request = request
        self.ranking = ranking
        self.candidates = ranking.candidates
        self._capabilities = request.needs  # what its parts need (images: vision, PDFs: documents)
        self.settings = failover.settings
        self._loop = asyncio.get_running_loop()
        # Loop time, the clock the Pacer's timers run on (domain/deadlines.py).
        self.deadline = self._loop.time() + (deadline_s if deadline_s is not None else self.settings.default_deadline_s)
        self.records = Records()
        self.delivered = Delivered(request.mid_stream_policy)
        self._min_context = 0
        self._spans: dict[int, Span] = {}  # attempt number -> its trace span, until the attempt's record
        self._deferred: list[Candidate] = []  # skipped on the gateway's own guess: a last resort
        self._failed: list[tuple[Candidate, BreakerState]] = []  # and the breaker's state right after
        budgets = failover.budgets
        self.budget = RunBudget(budgets, request) if budgets is not None else None
        self.spend = RunSpend(failover.spend, request) if failover.spend is not None else None
        self.need = Need(estimate_tokens(request_chars(request)), request.max_output_tokens or 0)  # of headroom
        self._numbers = itertools.count(1)  # attempt numbers: a hedge starts before the attempt it hedges ends
        self._hedge = HedgeAfter.of(ranking.route)
        self._race: Race | None = None  # once a hedge starts
        self._hedge_number: int | None = None  # the one hedge a request may start

    @property
    def attempts(self) -> list[AttemptRecord]:
        return self.records.attempts

    @property
    def skipped(self) -> list[AttemptRecord]:
        return self.records.skipped

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
        try:
            pending: Pending | None = None
            request = self.request
            tries = self._tries()
            for candidate, candidates_left, advice_ignored in tries:
                release = await self._admit(candidate, advice_ignored)
                if release is None:
                    continue
                number = next(self._numbers)
                failed_over = pending.failed_over(candidate) if pending is not None else None
                try:
                    attempt = self._attempt(candidate, request, number, candidates_left, failed_over)
                    hedge_s = self._hedge_delay(candidate)
                    if hedge_s is not None:
                        attempt = self._hedged(attempt, hedge_s, partial(self._start_hedge, tries, request, number))
                    async with aclosing(attempt) as events:
                        async for event in events:
                            yield event
                    return
                except AttemptFailed as failed:
                    candidate = failed.attempt.candidate  # the hedge, when it was the last one standing
                    pending = self._after_failure(candidate, failed)
                    if reported(pending.record.usage):
                        yield pending.record.usage
                    if pending.ends is Ending.FILTERED:
                        yield self._completed(candidate, FinishReason.CONTENT_FILTER, failed.error.upstream_request_id)
                        return
                    request = self.delivered.next_request(self.request)
                finally:
                    release()  # the attempt's connection is back in the pool: so is its share
            if pending is not None:
                self.delivered.check_retracted(pending.record, pending.discard, self.records)
            if self.budget is not None:
                await self.budget.take_user()  # over budget is the answer even when no candidate could be tried
            if self.spend is not None and (refused := self.spend.refusal()) is not None:
                raise refused  # a dollar budget is why nothing answered: say that, with its QuotaFailure
            raise final_error(self.request, self.records, self.failover.health, self.candidates, self.settings)
        except GatewayError as exc:
            # The caller learns what the call cost so far even when it ends in an error (ErrorInfo metadata).
            exc.metadata["cost_usd"] = format(total_usage(self.records).cost_usd, "f")
            raise

    async def _admit(self, candidate: Candidate, advice_ignored: bool) -> Release | None:
        """Rules 1 and 2, then the caller's connection share and the budgets: the share's release, or None when
        the candidate is skipped (the skip recorded, nothing held)."""
        if self._skip(candidate, advice_ignored):
            return None
        release = self._take_share(candidate)  # before the budget: a skip here leaves no budget held
        if release is None:
            return None
        if self.spend is not None and not await self._reserve_spend(candidate):
            release()
            return None
        if self.budget is not None and not await self._take_budget(candidate):
            release()
            if self.spend is not None:
                self.spend.give_back()  # no attempt: the dollars reserved for it are free again
            return None
        return release

    def _hedge_delay(self, candidate: Candidate) -> float | None:
        """Seconds until this attempt is hedged; None when the route does not hedge, the request's one hedge
        was started already, or output was sent (a hedge could only restart what the caller holds)."""
        hedge = self._hedge
        if hedge is None or self._hedge_number is not None or self.delivered.sequence:
            return None
        return hedge.delay_s(self.failover.health, candidate.target)

    async def _hedged(
        self, attempt: Events, delay_s: float, start_hedge: Callable[[], Awaitable[Events | None]]
    ) -> Events:
        """The attempt raced against a hedge: a failure of one while the other runs is recorded here."""
        async with aclosing(race(attempt, delay_s, start_hedge)) as events:
            async for event in events:
                if not isinstance(event, AttemptFailed):
                    yield event
                    continue
                pending = self._after_failure(event.attempt.candidate, event)
                if reported(pending.record.usage):
                    yield pending.record.usage
                if pending.ends is Ending.FILTERED:
                    candidate, upstream_id = event.attempt.candidate, event.error.upstream_request_id
                    yield self._completed(candidate, FinishReason.CONTENT_FILTER, upstream_id)
                    return

    async def _start_hedge(
        self, tries: Iterator[tuple[Candidate, int, bool]], request: ChatRequest, hedged: int
    ) -> Events | None:
        """The next candidate that may be tried, started as the hedge of attempt `hedged`; None when none is
        left."""
        for candidate, candidates_left, advice_ignored in tries:
            release = await self._admit(candidate, advice_ignored)
            if release is None:
                continue
            number = self._hedge_number = next(self._numbers)
            self._race = Race(frozenset((hedged, number)))
            return self._released(self._attempt(candidate, request, number, candidates_left, None), release)
        return None

    @staticmethod
    async def _released(attempt: Events, release: Release) -> Events:
        """The attempt's events; its connection share given back when it ends (the hedge's own)."""
        try:
            async with aclosing(attempt) as events:
                async for event in events:
                    yield event
        finally:
            release()

    async def _reserve_spend(self, candidate: Candidate) -> bool:
        """Reserve the attempt's estimated cost on the dollar budgets; False when it does not fit."""
        assert self.spend is not None
        return self._admitted(candidate, await self.spend.reserve(candidate))

    def _tries(self) -> Iterator[tuple[Candidate, int, bool]]:
        """(candidate, candidates left, advice ignored): the route in order, then one last resort if any."""
        for index, candidate in enumerate(self.candidates):
            yield candidate, len(self.candidates) - index, False
        # Rule 3 of chat/rules.py: never fail on the gateway's own guess alone.
        waited = any(r.outcome is FailureKind.TIMEOUT for r in self.attempts)
        fallback = last_resort(self._deferred, self._failed, self.failover.health, waited_out_a_stall=waited)
        if fallback is not None:
            yield fallback, 1, True

    def _skip(self, candidate: Candidate, advice_ignored: bool) -> bool:
        skip = skip_reason(
            candidate,
            self.failover.health,
            need_prefill=self.delivered.prefill,
            min_context=self._min_context,
            time_left_s=self.deadline - self._loop.time(),
            min_attempt_budget_s=self.settings.min_attempt_budget_s,
            need=self.need,
            last_resort=advice_ignored,
            capabilities=self._capabilities,
        )
        if skip is None:
            return False
        if advice_ignored:
            return True  # recorded when it was first skipped
        if skip.soft:
            self._deferred.append(candidate)
        self.records.skip(candidate, skip)
        return True

    async def _take_budget(self, candidate: Candidate) -> bool:
        """Take the candidate's budget (and the user's, the first time); False when it had no room."""
        assert self.budget is not None
        return self._admitted(candidate, await self.budget.take(candidate))

    def _admitted(self, candidate: Candidate, skip: Skip | None) -> bool:
        """True without a reason to skip; else the skip is recorded (it rides on the next attempt) and False."""
        if skip is None:
            return True
        self.records.skip(candidate, skip)
        return False

    def _take_share(self, candidate: Candidate) -> Release | None:
        """One connection of the caller's share of the provider (limits/shares.py); None when it has none."""
        provider = candidate.provider
        share = share_of(provider.max_connections, provider.max_connections_per_caller)
        release = self.failover.shares.take(provider.name, self.request.caller, share)
        if release is None:
            detail = f"this caller's share of the provider's connections ({share}) is in use"
            self.records.skip(candidate, Skip(SkipReason.BUDGET_EXHAUSTED, detail, SHARE_RETRY_AFTER_S))
        return release

    async def _attempt(
        self,
        candidate: Candidate,
        request: ChatRequest,
        number: int,
        candidates_left: int,
        failed_over: FailedOver | None,
    ) -> AsyncGenerator[GatewayEvent, None]:
        timing = AttemptTiming.share(candidate, self.request, self.settings, self.deadline, candidates_left)
        health = self.failover.health
        patience_s = timing.first_token_by - self._loop.time()
        ticket = health.admit(candidate.target, patience_s)
        attempt = Attempt(candidate, request, timing, on_first_token=lambda: health.first_token(ticket))
        skipped = self.records.skipped_since_last_attempt()
        span = self._spans[number] = spans.start(
            self.failover.tracer, candidate.provider.type, candidate.provider.name, candidate.model.name, request
        )
        # The upstream request leaves before the caller is told, so telling it costs no time to first token.
        # The span is current while the read task is created, so the HTTP request is traced under it; and
        # its responses tell the target's headroom.
        with trace.use_span(span, end_on_exit=False), health.headroom.listen(candidate.target, self.need, patience_s):
            attempt.open()
        cancelled = False
        try:
            await attempt.sent()
            if failed_over is not None:
                self.failover.reporter.failed_over(failed_over)  # after open(): off the way to the next request
                yield failed_over
            choice = self.ranking.choice(candidate)
            policy, score = (choice.policy, choice.score) if choice is not None else ("", None)
            hedge = number == self._hedge_number
            yield AttemptStarted(candidate.provider.name, candidate.model.name, number, skipped, policy, score, hedge)
            async with aclosing(attempt.pieces()) as pieces:
                async for piece in pieces:
                    if self._race is not None and not self._race.claim(number):
                        raise Outrun  # the other attempt answers; recorded as cancelled below
                    yield self.delivered.deliver(piece)
        except ProviderError as error:
            raise AttemptFailed(error, attempt, number, ticket) from error
        except BaseException:
            cancelled = True  # cancelled, deadline passed or the caller went away
            raise
        finally:
            await attempt.close()
            if cancelled:  # upstream is closed now: count what it cost
                self._record(candidate, attempt, number, None, ticket, cancelled=True)
        record = self._record(candidate, attempt, number, None, ticket)
        if reported(record.usage):
            yield record.usage
        finished = attempt.state.finished
        assert finished is not None
        hedge_won = number == self._hedge_number
        yield self._completed(candidate, finished.reason, finished.upstream_request_id, hedge=hedge_won)

    def _after_failure(self, candidate: Candidate, failed: AttemptFailed) -> Pending:
        """Rule 4 of chat/rules.py: what this failure does to the call."""
        error, rule = failed.error, after_failure(failed.error.kind)
        record = self._record(candidate, failed.attempt, failed.number, error, failed.ticket)
        if rule.ends is Ending.REJECTED:
            raise provider_rejected(candidate, error)
        if rule.larger_context:
            self._min_context = max(self._min_context, candidate.model.context_window or 1)
        discard = rule.mid_stream and self.delivered.after_failure(record, self.records)
        return Pending(record, error, discard, rule.ends)

    def _completed(
        self, candidate: Candidate, reason: FinishReason, upstream_request_id: str, hedge: bool = False
    ) -> Completed:
        completed = self.records.completed(candidate, reason, upstream_request_id, self.request.request_id)
        return replace(completed, hedge_won=True) if hedge else completed

    def _record(
        self,
        candidate: Candidate,
        attempt: Attempt,
        number: int,
        error: ProviderError | None,
        ticket: Ticket,
        cancelled: bool = False,
    ) -> AttemptRecord:
        """The one place an attempt's end is told: the run's records, the attempt's span, the run's budget,
        and the reporter (health, ledger, log, telemetry), whose breaker state feeds the last resort."""
        raced = self._race is not None and number in self._race.racers
        record = attempt_record(candidate, attempt, number, error, cancelled, raced)
        record.hedge = number == self._hedge_number
        self.records.append(record)
        finished = attempt.state.finished
        span = self._spans.pop(number, None)
        if span is not None:
            spans.end(span, record, finished.reason.value if finished else None)
        if self.budget is not None:
            self.budget.attempt_ended(record)
        if self.spend is not None:
            self.spend.attempt_ended(record)
        first_token_s = attempt.state.first_token_s
        reporter = self.failover.reporter
        breaker = reporter.attempt_ended(self.request, candidate, record, error, first_token_s, ticket, cancelled)
        if breaker is not None:
            self._failed.append((candidate, breaker))  # a last resort once its breaker moves on
        return record


class Failover:
    """Shared across requests: settings, health, the ledger and an observer told about each attempt."""

    def __init__(
        self,
        settings: FailoverSettings,
        health: Health,
        ledger: Ledger,
        observer: AttemptObserver | None = None,
        budgets: Budgets | None = None,
        tracer: trace.Tracer | None = None,
        on_failover: FailoverObserver | None = None,
        spend: Spend | None = None,
        on_usage: UsageObserver | None = None,
    ) -> None:
        self.settings = settings
        self.health = health
        self.ledger = ledger
        self.budgets = budgets
        self.spend = spend
        self.tracer = tracer or trace.NoOpTracer()
        self.reporter = Reporter(health, ledger, observer, on_failover, on_usage)
        self.shares = ConnectionShares()

    def run(self, request: ChatRequest, candidates: list[Candidate] | Ranking, deadline_s: float | None) -> ChatRun:
        """A run over the candidates in order (a Ranking also says which policy placed each, for Started)."""
        ranking = candidates if isinstance(candidates, Ranking) else Ranking(candidates)
        return ChatRun(self, request, ranking, deadline_s)
