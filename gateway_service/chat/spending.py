"""One run's dealings with the dollar budgets (gateway_service/limits/spend.py): reserve, then settle.

Before each attempt the run reserves the attempt's estimated cost on every dollar limit of its caller and
user: the prompt's estimated tokens at the candidate's input price plus max_output_tokens (or the configured
default) at its output price. A candidate whose estimate does not fit is skipped (SkipReason.BUDGET_EXHAUSTED)
and a cheaper one may still run; a run that ends with nothing answered after such a skip is refused with
SpendBudgetExhausted (QuotaFailure: which budget, its limit, what was spent, when it resets). When the
attempt ends, its reservation is replaced by what it really cost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from gateway_service.accounting import Tokens, estimate_tokens, price_of
from gateway_service.chat.router import Candidate
from gateway_service.chat.rules import Skip
from gateway_service.domain.events import AttemptRecord, SkipReason
from gateway_service.domain.request import ChatRequest
from gateway_service.errors import SpendBudgetExhausted, SpendBudgetUnavailable
from gateway_service.limits.spend import MICRO, BackendDown, Refused, Spend, micro_usd
from servicekit.errors import QuotaViolation

UNAVAILABLE_RETRY_S = 1.0


class RunSpend:
    def __init__(self, spend: Spend, request: ChatRequest) -> None:
        self.spend = spend
        self.slots = spend.slots(request.caller, request.user_id)
        self.input_estimate = estimate_tokens(sum(len(m.content) for m in request.messages))
        self.output_estimate = request.max_output_tokens or spend.settings.default_output_tokens
        self.refused: list[Refused] = []
        self._held = 0

    async def reserve(self, candidate: Candidate) -> Skip | None:
        """Reserve the candidate's estimated cost; why to skip it when that does not fit."""
        if not self.slots:
            return None
        tokens = Tokens(input=self.input_estimate, output=self.output_estimate)
        amount = micro_usd(price_of(candidate.model).cost(tokens))
        try:
            refused = await self.spend.reserve(self.slots, amount)
        except BackendDown:
            raise SpendBudgetUnavailable(
                "dollar budgets cannot be checked right now (their store is unreachable); retry",
                retry_after_s=UNAVAILABLE_RETRY_S,
            ) from None
        if refused is None:  # store down, on_backend_error: allow
            return None
        if refused:
            self.refused = refused
            wait = max(r.slot.resets_at for r in refused) - datetime.now(UTC)
            message = "; ".join(r.slot.describe(r.spent_micro) for r in refused)
            estimate = Decimal(amount) * MICRO
            return Skip(SkipReason.BUDGET_EXHAUSTED, f"estimated ${estimate:.6f}: {message}", wait.total_seconds())
        self._held = amount
        return None

    def attempt_ended(self, record: AttemptRecord) -> None:
        """Replace the reservation by what the attempt cost (its usage, reported or estimated)."""
        cost = micro_usd(record.usage.cost_usd) if record.usage is not None else 0
        self.spend.settle(self.slots, cost - self._held)
        self._held = 0

    def give_back(self) -> None:
        """Free the reservation of an attempt that was not made after all (another budget skipped it)."""
        self.spend.settle(self.slots, -self._held)
        self._held = 0

    def refusal(self) -> SpendBudgetExhausted | None:
        """The error for a run that ended unanswered after a candidate did not fit its dollar budget."""
        if not self.refused:
            return None
        first = self.refused[0].slot
        wait = max(r.slot.resets_at for r in self.refused) - datetime.now(UTC)
        return SpendBudgetExhausted(
            "; ".join(r.slot.describe(r.spent_micro) for r in self.refused),
            metadata={
                "budget": f"{first.subject} per {first.window}",
                "limit_usd": f"{first.limit_usd:.6f}",
                "spent_usd": f"{Decimal(self.refused[0].spent_micro) * MICRO:.6f}",
                "resets_at": f"{first.resets_at:%Y-%m-%dT%H:%M:%SZ}",
            },
            retry_after_s=max(wait.total_seconds(), 1.0),
            quota_violations=[QuotaViolation(r.slot.subject, r.slot.describe(r.spent_micro)) for r in self.refused],
        )
