"""Reasoning options -> what budget-based models (Anthropic, Gemini by default) and effort-based ones (OpenAI, and
Anthropic and Gemini models configured `reasoning: effort`) take, and the filter that keeps reasoning text from a
caller who asked not to see it.

max_output_tokens bounds reasoning and answer together (Anthropic's max_tokens, OpenAI's
max_completion_tokens and Gemini's maxOutputTokens all count reasoning), so a budget derived from
an effort leaves at least half of it for the answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from gateway_service.domain.request import (
    MIN_REASONING_BUDGET,
    ChatRequest,
    ProviderEvent,
    ReasoningDelta,
    ReasoningEffort,
    ReasoningOptions,
)

BUDGETS = {
    ReasoningEffort.MINIMAL: MIN_REASONING_BUDGET,
    ReasoningEffort.LOW: 2048,
    ReasoningEffort.MEDIUM: 8192,
    ReasoningEffort.HIGH: 16384,
    ReasoningEffort.XHIGH: 24576,
    ReasoningEffort.MAX: 32768,
}
# A budget-only request becomes the effort level whose budget covers it; only low, medium and high, the levels
# every effort-based model accepts, since a caller who gave a number did not pick a model-specific level.
_EFFORT_FOR_BUDGET = (
    (BUDGETS[ReasoningEffort.LOW], ReasoningEffort.LOW),
    (BUDGETS[ReasoningEffort.MEDIUM], ReasoningEffort.MEDIUM),
)


def budget_tokens(options: ReasoningOptions, max_output_tokens: int | None) -> int:
    """The thinking budget for a request that asks for reasoning (`options.enabled`)."""
    if options.budget_tokens is not None:
        return options.budget_tokens
    budget = BUDGETS.get(options.effort or ReasoningEffort.MEDIUM, BUDGETS[ReasoningEffort.MEDIUM])
    if max_output_tokens:
        budget = max(MIN_REASONING_BUDGET, min(budget, max_output_tokens // 2))
    return budget


def effort_level(options: ReasoningOptions) -> str | None:
    """OpenAI's `reasoning_effort` for the options, or None to leave the model's default."""
    if options.effort is not None:
        return options.effort.value
    if options.budget_tokens is None:
        return None
    return _effort_for_budget(options.budget_tokens).value


def effort(options: ReasoningOptions) -> ReasoningEffort:
    """The level for an effort-based model, for a request that asks for reasoning (`options.enabled`): the
    caller's effort when given (it wins over a budget: the model takes a level), else the one covering the budget."""
    if options.effort is not None and options.effort is not ReasoningEffort.NONE:
        return options.effort
    return _effort_for_budget(options.budget_tokens or BUDGETS[ReasoningEffort.MEDIUM])


def _effort_for_budget(budget: int) -> ReasoningEffort:
    return next((level for most, level in _EFFORT_FOR_BUDGET if budget <= most), ReasoningEffort.HIGH)


def shown(request: ChatRequest, events: AsyncGenerator[ProviderEvent, None]) -> AsyncGenerator[ProviderEvent, None]:
    """The adapter's events as the caller asked for them: without reasoning text when it said so.

    Signatures and redacted blocks still pass: a tool loop has to send them back.
    """
    if request.reasoning is None or request.reasoning.include_text:
        return events
    return _without_reasoning_text(events)


async def _without_reasoning_text(
    events: AsyncGenerator[ProviderEvent, None],
) -> AsyncGenerator[ProviderEvent, None]:
    # aclosing: closing this generator must close the adapter's at once, and with it the HTTP response.
    async with aclosing(events) as inner:
        async for event in inner:
            if isinstance(event, ReasoningDelta) and event.text:
                if not (event.signature or event.redacted_data):
                    continue
                event = ReasoningDelta(signature=event.signature, redacted_data=event.redacted_data)
            yield event
