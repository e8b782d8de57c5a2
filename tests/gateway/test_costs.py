"""Prices that match the bill: a known usage block of each provider, read by its adapter's translator from
the provider's own wire objects (the official SDK's types), priced, and compared with the provider's
published arithmetic (dollars per million tokens for each kind of token)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from anthropic.types import RawMessageDeltaEvent, RawMessageStartEvent
from google.genai import types as genai_types
from openai.types.chat import ChatCompletionChunk

from gateway_service.accounting import Price, Tokens, price_of
from gateway_service.config import ModelSpec
from gateway_service.config.providers import price_version
from gateway_service.domain.request import UsageReport
from gateway_service.providers.anthropic_convert import EventTranslator
from gateway_service.providers.gemini_convert import ResponseTranslator
from gateway_service.providers.openai_convert import ChunkTranslator

HAIKU = ModelSpec(
    name="claude-haiku-4-5",
    input_usd_per_mtok=Decimal("1"),
    cached_input_usd_per_mtok=Decimal("0.10"),
    cache_write_usd_per_mtok=Decimal("1.25"),
    output_usd_per_mtok=Decimal("5"),
)
GPT = ModelSpec(
    name="gpt-4o-mini",
    input_usd_per_mtok=Decimal("0.15"),
    cached_input_usd_per_mtok=Decimal("0.075"),
    output_usd_per_mtok=Decimal("0.60"),
)
O_MINI = ModelSpec(
    name="o4-mini",
    input_usd_per_mtok=Decimal("1.10"),
    cached_input_usd_per_mtok=Decimal("0.275"),
    output_usd_per_mtok=Decimal("4.40"),
)
FLASH = ModelSpec(
    name="gemini-2.5-flash",
    input_usd_per_mtok=Decimal("0.30"),
    cached_input_usd_per_mtok=Decimal("0.075"),
    output_usd_per_mtok=Decimal("2.50"),
)


def anthropic_usage() -> UsageReport:
    start = RawMessageStartEvent.model_validate(
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-haiku-4-5",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 100,
                    "cache_creation_input_tokens": 2_000,
                    "cache_read_input_tokens": 50_000,
                    "output_tokens": 1,
                },
            },
        }
    )
    delta = RawMessageDeltaEvent.model_validate(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 300},
        }
    )
    translator = EventTranslator("")
    translator.feed(start), translator.feed(delta)
    return _usage_of(translator.finish())


def openai_usage(prompt: int, cached: int, completion: int, reasoning: int) -> UsageReport:
    chunk = ChatCompletionChunk.model_validate(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": reasoning},
            },
        }
    )
    translator = ChunkTranslator("")
    translator.feed(chunk)
    return _usage_of(translator.finish())


def gemini_usage() -> UsageReport:
    response = genai_types.GenerateContentResponse.model_validate(
        {
            "responseId": "r1",
            "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
            "usageMetadata": {
                "promptTokenCount": 10_000,
                "cachedContentTokenCount": 6_000,
                "candidatesTokenCount": 200,
                "thoughtsTokenCount": 100,
                "totalTokenCount": 10_300,
            },
        }
    )
    translator = ResponseTranslator("")
    translator.feed(response)
    return _usage_of(translator.finish())


def _usage_of(events: list[object]) -> UsageReport:
    (usage,) = [e for e in events if isinstance(e, UsageReport)]
    return usage


@pytest.mark.parametrize(
    "model,usage,published",
    [
        # Anthropic: input 100 x $1, cache writes 2,000 x $1.25, cache reads 50,000 x $0.10, output 300 x $5.
        (HAIKU, anthropic_usage, Decimal("0.0091")),
        # OpenAI: of 10,000 prompt tokens 8,000 cached: 2,000 x $0.15 + 8,000 x $0.075; output 500 x $0.60.
        (GPT, lambda: openai_usage(10_000, 8_000, 500, 0), Decimal("0.0012")),
        # OpenAI reasoning model: reasoning tokens are output tokens, billed at the output price:
        # 1,000 x $1.10 + 3,000 x $0.275 + (400 + 600) x $4.40.
        (O_MINI, lambda: openai_usage(4_000, 3_000, 1_000, 600), Decimal("0.006325")),
        # Gemini: of 10,000 prompt tokens 6,000 from the cache: 4,000 x $0.30 + 6,000 x $0.075;
        # output 200 x $2.50 and thoughts 100 x $2.50.
        (FLASH, gemini_usage, Decimal("0.00240")),
    ],
    ids=["anthropic", "openai", "openai-reasoning", "gemini"],
)
def test_a_known_usage_block_costs_what_the_provider_bills(model: ModelSpec, usage: object, published: Decimal) -> None:
    report = usage()  # type: ignore[operator]
    assert price_of(model).cost(Tokens.of(report)) == published


def test_the_cache_heavy_anthropic_call_of_the_issue_is_no_longer_ten_times_too_dear() -> None:
    """80,000 cache reads and nothing else at Haiku 3.5's $1 / $0.10: the bug billed $0.0800, the bill is $0.0080."""
    model = ModelSpec(name="h", input_usd_per_mtok=Decimal(1), cached_input_usd_per_mtok=Decimal("0.10"))
    usage = UsageReport(input_tokens=80_000, output_tokens=0, cached_input_tokens=80_000)
    assert price_of(model).cost(Tokens.of(usage)) == Decimal("0.008")


def test_unset_cache_and_reasoning_prices_fall_back_to_input_and_output() -> None:
    price = Price.of(ModelSpec(name="m", input_usd_per_mtok=Decimal(2), output_usd_per_mtok=Decimal(8)))
    assert (price.cached_input, price.cache_write, price.reasoning) == (Decimal(2), Decimal(2), Decimal(8))


def test_a_price_change_is_a_new_version_and_the_same_prices_the_same_version() -> None:
    a = ModelSpec(name="m", input_usd_per_mtok=Decimal("0.15"), output_usd_per_mtok=Decimal("0.60"))
    same = ModelSpec(name="other", input_usd_per_mtok=Decimal("0.150"), output_usd_per_mtok=Decimal("0.6"))
    dearer = ModelSpec(name="m", input_usd_per_mtok=Decimal("0.20"), output_usd_per_mtok=Decimal("0.60"))
    named = ModelSpec(name="m", input_usd_per_mtok=Decimal("0.15"), price_version="2026-12")
    assert price_version(a) == price_version(same) != price_version(dearer)
    assert price_version(named) == "2026-12" and Price.of(named).version == "2026-12"


def test_prices_from_yaml_floats_are_exact_decimals() -> None:
    model = ModelSpec.model_validate({"name": "m", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.3})
    assert model.input_usd_per_mtok == Decimal("0.1")  # not 0.1000000000000000055511151231257827
    usage = UsageReport(input_tokens=3, output_tokens=1)
    assert price_of(model).cost(Tokens.of(usage)) == Decimal("0.0000006")
