"""One run's dealings with the rate-limit budgets (limits.py): what it took, and squaring it with usage.

The caller's user_id pays one request and the estimated input tokens before anything else; each
candidate's provider and model budgets are taken just before its attempt, and one without room is
skipped like one cooling down. When an attempt (or the whole call) ends, the token estimate is
replaced by the tokens it really used: given back when fewer, owed when more.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway_service.accounting import estimate_tokens
from gateway_service.chat.events import AttemptRecord, SkipReason
from gateway_service.chat.request import ChatRequest
from gateway_service.chat.router import Candidate
from gateway_service.limits import Budgets, Hold, describe, user_budget_exhausted


class RunBudget:
    def __init__(self, budgets: Budgets, request: ChatRequest) -> None:
        self.budgets = budgets
        self.request = request
        self.estimate = estimate_tokens(sum(len(m.content) for m in request.messages))
        self._user: Hold | None = None
        self._attempt: Hold | None = None

    async def take_user(self) -> None:
        """Raises UserBudgetExhausted (RESOURCE_EXHAUSTED + QuotaFailure + RetryInfo) when the user has no room."""
        taken = await self.budgets.take(self.budgets.user_slots(self.request.user_id), self.estimate)
        if not isinstance(taken, Hold):
            raise user_budget_exhausted(self.request.user_id, taken)
        self._user = taken

    async def take(self, candidate: Candidate) -> AttemptRecord | None:
        """None when the candidate's budgets gave one attempt, else the record of skipping it."""
        taken = await self.budgets.take(candidate.budget, self.estimate)
        if isinstance(taken, Hold):
            self._attempt = taken
            return None
        provider, model = candidate.provider.name, candidate.model.name
        self.budgets.note_exhausted(provider, model, taken)
        retry = max(e.retry_after_s for e in taken)
        return AttemptRecord(0, provider, model, SkipReason.BUDGET_EXHAUSTED, describe(taken), retry_after_s=retry)

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
