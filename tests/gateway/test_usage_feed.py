"""The gateway writes the usage ledger: one row per attempt made, failed ones too, through the real schema service
(gRPC, PostgreSQL), with the caller's ids, the key's hash, the five token counts and the cost."""

from __future__ import annotations

import time
from decimal import Decimal

import grpc
import pytest
from google.protobuf import timestamp_pb2

from gateway_service.chat.records import LedgerEntry
from gateway_service.domain.events import AttemptRecord, AttemptUsage
from gateway_service.domain.failures import FailureKind
from gateway_service.domain.request import ChatRequest
from gateway_service.usage import usage_record
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from schemaservice.v1 import usage_service_pb2 as upb
from schemaservice.v1 import usage_service_pb2_grpc
from tests.gateway.e2e_helpers import user
from tests.gateway.usage_helpers import ledger_rows, usage_gateway, within
from tests.schemaserver import RestartableSchemaServer

pytestmark = pytest.mark.timeout(60)


async def test_every_attempt_of_a_chat_is_a_ledger_row(sim: SimulatorHandle, migrated_db: str) -> None:
    schema = RestartableSchemaServer(migrated_db)
    await schema.start()
    try:
        async with usage_gateway(sim, schema.address) as gateway:
            failed_over = await gateway.chat.Chat(
                pb.ChatRequest(
                    model="default",
                    messages=user("[[fault:500 api=anthropic]] [[reply:one two three]]"),
                    request_id="chat-a",
                    user_id="u-7",
                ),
                timeout=10,
            )
            await within(20, gateway.delivered(2))
            key_id = gateway.running.gateway.config.providers[0].key_id
        async with grpc.aio.insecure_channel(schema.address) as channel:
            usage = usage_service_pb2_grpc.UsageServiceStub(channel)
            since = timestamp_pb2.Timestamp(seconds=int(time.time()) - 3600)
            failed_only = await usage.QueryUsage(upb.QueryUsageRequest(start_time=since, provider="first"))
            by_user = await usage.QueryUsage(
                upb.QueryUsageRequest(start_time=since, group_by=[upb.USAGE_DIMENSION_USER])
            )
    finally:
        await schema.stop()
    assert [a.provider for a in failed_over.attempts] == ["first", "second"]
    rows = await ledger_rows(migrated_db)
    assert [(r["request_id"], r["attempt"], r["provider"], r["outcome"]) for r in rows] == [
        ("chat-a", 1, "first", "failed"),
        ("chat-a", 2, "second", "succeeded"),
    ]
    failed, answered = rows
    assert failed["failure_reason"] == "FAILURE_REASON_SERVER_ERROR" and not failed["failover"]
    assert failed["key_id"] == key_id and len(key_id) == 12 and "sk-sim" not in key_id
    assert failed["time_to_first_token_s"] is None and failed["cost_usd"] == 0
    assert answered["failover"] and not answered["estimated"] and answered["failure_reason"] == ""
    usage = failed_over.usage
    assert (answered["input_tokens"], answered["output_tokens"]) == (usage.input_tokens, usage.output_tokens)
    assert answered["output_tokens"] > 0 and answered["time_to_first_token_s"] > 0
    # At the test prices ($1 in, $2 out a million tokens), to the ledger's scale, as ChatResponse says.
    expected = (Decimal(answered["input_tokens"]) * 1 + Decimal(answered["output_tokens"]) * 2) / 1_000_000
    assert answered["cost_usd"] == expected == Decimal(usage.cost)
    assert answered["price_version"] and answered["user_id"] == "u-7" and answered["caller"] == ""
    assert answered["start_time"] > failed["start_time"]
    assert failed_only.summary == "1 group, $0 over 1 attempt"  # a zero cost in words, not `$0E-12`
    (user_group,) = by_user.groups
    assert (user_group.user_id, user_group.attempts, user_group.failed_attempts) == ("u-7", 2, 1)
    assert by_user.summary == f"1 group, ${answered['cost_usd'].normalize():f} over 2 attempts"


def test_a_record_carries_the_disjoint_counts_and_the_cost_as_a_decimal_string() -> None:
    usage = AttemptUsage(
        "p", "m", 1, input_tokens=1000, output_tokens=300, cost_usd=Decimal("0.000123456789"),
        reasoning_tokens=100, cached_input_tokens=600, cache_write_tokens=50, estimated=True, price_version="v1",
    )  # fmt: skip
    record = AttemptRecord(3, "p", "m", FailureKind.CONTENT_FILTERED, "filtered", 1.5, usage)
    request = ChatRequest(model="m", messages=(), request_id="r-1", user_id="u", caller="web")
    entry = LedgerEntry(request, record, "abc", 1_700_000_000_123_456_789, 0.25, cancelled=False)
    message = usage_record(entry)
    assert (message.input_tokens, message.cached_input_tokens, message.cache_write_tokens) == (350, 600, 50)
    assert (message.output_tokens, message.reasoning_tokens) == (200, 100)
    assert message.cost_usd == "0.000123456789" and message.estimated and message.price_version == "v1"
    assert message.outcome == upb.USAGE_OUTCOME_FAILED
    assert message.failure_reason == "FAILURE_REASON_CONTENT_FILTERED"  # no FailureReason value of its own
    assert message.start_time.ToNanoseconds() == 1_700_000_000_123_456_789 and message.failover
    assert message.duration.ToTimedelta().total_seconds() == 1.5 and message.caller == "web"
    cancelled = usage_record(LedgerEntry(request, AttemptRecord(1, "p", "m"), "abc", 1, None, cancelled=True))
    assert cancelled.outcome == upb.USAGE_OUTCOME_CANCELLED and cancelled.cost_usd == "0"
    assert not cancelled.HasField("time_to_first_token") and not cancelled.failover


def test_a_failure_reason_is_the_name_callers_see_in_error_info() -> None:
    from gateway_service.api.to_proto import REASONS
    from gateway_service.usage.feed import failure_reason

    for kind in FailureKind:
        shown = REASONS[kind]
        if shown != pb.FAILURE_REASON_UNSPECIFIED:
            assert failure_reason(kind) == pb.FailureReason.Name(shown), kind
        else:  # no value of its own: a name no FailureReason value takes
            assert failure_reason(kind) not in pb.FailureReason.keys(), kind
