"""Prices and cost: what each attempt cost, and what each provider has cost since start."""

from __future__ import annotations

from dataclasses import dataclass

from gateway_service.config import ModelSpec


def cost_usd(model: ModelSpec, input_tokens: int, output_tokens: int) -> float:
    """Cost of one attempt from the configured per-million-token prices."""
    return (input_tokens * model.input_usd_per_mtok + output_tokens * model.output_usd_per_mtok) / 1_000_000


def estimate_tokens(text_chars: int) -> int:
    """Rough token count (about four characters a token) for attempts cut short before usage arrived."""
    return (text_chars + 3) // 4


@dataclass
class Totals:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class Ledger:
    """Running totals per provider, for ListProviders."""

    def __init__(self) -> None:
        self._totals: dict[str, Totals] = {}

    def add(self, provider: str, input_tokens: int, output_tokens: int, cost: float) -> None:
        totals = self._totals.setdefault(provider, Totals())
        totals.input_tokens += input_tokens
        totals.output_tokens += output_tokens
        totals.cost_usd += cost

    def totals(self, provider: str) -> Totals:
        return self._totals.get(provider, Totals())
