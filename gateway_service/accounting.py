"""Prices and cost: what each attempt cost, and what each provider has cost since start.

The providers report usage in overlapping counts (OpenAI's `prompt_tokens` include the cached ones,
Anthropic's `input_tokens` exclude both cache reads and writes, everyone's output includes reasoning).
`UsageReport` carries them as the adapters read them (input and output totals, and the cached, cache-write
and reasoning parts of those); `Tokens` splits them into the five disjoint counts that are billed at five
prices, and `Price.cost` multiplies:

    cost = (input x input_usd + cached x cached_input_usd + cache_write x cache_write_usd
            + output x output_usd + reasoning x reasoning_usd) / 1,000,000

where `input` is the input tokens neither read from nor written to a cache and `output` the output tokens
that are not reasoning. Money is a `Decimal` throughout, rounded only when shown (ROUND_HALF_EVEN to
COST_SCALE places, the ledger column's scale).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from gateway_service.config import ModelSpec
from gateway_service.config.providers import price_version

MILLION = Decimal(1_000_000)
COST_SCALE = Decimal("1e-12")  # the usage ledger's numeric(24, 12)


class Counts(Protocol):
    """Usage as the adapters read it (UsageReport) or as an attempt reported it (AttemptUsage)."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cached_input_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def reasoning_tokens(self) -> int: ...


@dataclass(frozen=True)
class Tokens:
    """An attempt's tokens in the five disjoint counts prices apply to."""

    input: int = 0
    cached_input: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    @classmethod
    def of(cls, usage: Counts) -> Tokens:
        cached, written = max(usage.cached_input_tokens, 0), max(usage.cache_write_tokens, 0)
        reasoning = max(usage.reasoning_tokens, 0)
        return cls(
            input=max(usage.input_tokens - cached - written, 0),
            cached_input=cached,
            cache_write=written,
            output=max(usage.output_tokens - reasoning, 0),
            reasoning=reasoning,
        )


@dataclass(frozen=True)
class Price:
    """A model's five prices in US dollars per million tokens, and the version that names them."""

    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    output: Decimal
    reasoning: Decimal
    version: str

    @classmethod
    def of(cls, model: ModelSpec) -> Price:
        prices = (
            model.input_usd_per_mtok,
            _or(model.cached_input_usd_per_mtok, model.input_usd_per_mtok),
            _or(model.cache_write_usd_per_mtok, model.input_usd_per_mtok),
            model.output_usd_per_mtok,
            _or(model.reasoning_usd_per_mtok, model.output_usd_per_mtok),
        )
        return cls(*prices, version=price_version(model))

    def cost(self, tokens: Tokens) -> Decimal:
        """The exact cost of these tokens, in US dollars."""
        micro = (
            tokens.input * self.input
            + tokens.cached_input * self.cached_input
            + tokens.cache_write * self.cache_write
            + tokens.output * self.output
            + tokens.reasoning * self.reasoning
        )
        return (micro / MILLION).quantize(COST_SCALE)

    @property
    def configured(self) -> bool:
        return bool(self.input or self.output)


@functools.lru_cache(maxsize=4096)
def price_of(model: ModelSpec) -> Price:
    """The model's Price, made once (its version hash is not worth a sha256 per attempt)."""
    return Price.of(model)


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value


def estimate_tokens(text_chars: int) -> int:
    """Rough token count (about four characters a token) for attempts cut short before usage arrived."""
    return (text_chars + 3) // 4


@dataclass
class Totals:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


class Ledger:
    """Running totals per provider, for ListProviders."""

    def __init__(self) -> None:
        self._totals: dict[str, Totals] = {}

    def add(self, provider: str, input_tokens: int, output_tokens: int, cost: Decimal) -> None:
        totals = self._totals.setdefault(provider, Totals())
        totals.input_tokens += input_tokens
        totals.output_tokens += output_tokens
        totals.cost_usd += cost

    def totals(self, provider: str) -> Totals:
        return self._totals.get(provider, Totals())
