"""One run's dealings with the rate-limit budgets (gateway_service/limits/): what it took, squared with usage.

The caller's user_id pays one request and the estimated input tokens before the first attempt (with
that candidate's budgets, in one round trip); each candidate's provider and model budgets are taken
just before its attempt, and one without room is skipped like one cooling down. When an attempt (or
the whole call) ends, its token estimate is replaced by the tokens really used: given back when fewer,
owed when more.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway_service.accounting import estimate_tokens
from gateway_service.chat.router import Candidate
from gateway_service.chat.rules import Skip
from gateway_service.domain.events import AttemptRecord, SkipReason
from gateway_service.domain.request import ChatRequest
from gateway_service.limits.budgets import Budgets, describe, user_budget_exhausted
from gateway_service.limits.core import Hold, Slot, Taken


class RunBudget:
    def __init__(self, budgets: Budgets, request: ChatRequest) -> None:
        self.budgets = budgets
        self.request = request
        self.estimate = estimate_tokens(sum(len(m.content) for m in request.messages))
        self._user_slots = budgets.user_slots(request.user_id, request.caller) if budgets.limits_users else ()
        # Only token rates are squared with usage at the end of the call; requests are paid up front.
        self.settles_user = any(s.rate.counts_tokens for s in self._user_slots)
        self._user: Hold | None = None
        self._attempt: Hold | None = None

    async def take(self, candidate: Candidate) -> Skip | None:
        """Before an attempt: the user's budget (the first time) and the candidate's, in one round trip.

        Raises UserBudgetExhausted (RESOURCE_EXHAUSTED + QuotaFailure + RetryInfo) when the user has no
        room; returns why to skip the candidate when it has none, else None.
        """
        user = self._user_slots if self._user is None else ()
        if not user and not candidate.budget:
            return None
        taken = await self.budgets.take(user, self.estimate, then=candidate.budget)
        self._took_user(user, taken)
        if taken.then is not None:
            self._attempt = taken.then
            return None
        provider, model = candidate.provider.name, candidate.model.name
        self.budgets.note_exhausted(provider, model, taken.exceeded)
        retry = max(e.retry_after_s for e in taken.exceeded)
        return Skip(SkipReason.BUDGET_EXHAUSTED, describe(taken.exceeded), retry)

    async def take_user(self) -> None:
        """The user's budget when no candidate got as far as taking it (every one was skipped)."""
        if self._user is None and self._user_slots:
            self._took_user(self._user_slots, await self.budgets.take(self._user_slots, self.estimate))

    def _took_user(self, user: tuple[Slot, ...], taken: Taken) -> None:
        if taken.first is None:
            raise user_budget_exhausted(self.request.user_id, taken.exceeded)
        if user:
            self._user = taken.first

    def attempt_ended(self, record: AttemptRecord) -> None:
        if self._attempt is not None:
            self.budgets.settle(self._attempt, tokens_used(record))
            self._attempt = None

    def call_ended(self, records: Sequence[AttemptRecord]) -> None:
        if self._user is not None:
            self.budgets.settle(self._user, sum(tokens_used(r) for r in records))
            self._user = None


def tokens_used(record: AttemptRecord) -> int:
    """Tokens an attempt used (reported, else estimated; none when nothing came back)."""
    usage = record.usage
    return usage.input_tokens + usage.output_tokens if usage is not None else 0
