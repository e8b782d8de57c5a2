"""Dollar budgets kept in memory start from the usage ledger: a restarted gateway still knows what each user spent
today and this month (the real schema service, PostgreSQL, gRPC)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from gateway_service import config
from gateway_service.schema_channel import SchemaChannel, usage_sender
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from schemaservice.v1 import usage_service_pb2 as upb
from servicekit.tls import ClientCredentials
from tests.gateway.e2e_helpers import Upstream, details, user
from tests.gateway.usage_helpers import usage_gateway
from tests.schemaserver import RestartableSchemaServer

pytestmark = pytest.mark.timeout(60)


def spent(user_id: str, cost: str, at: datetime) -> upb.UsageRecord:
    record = upb.UsageRecord(
        request_id=f"before-{user_id}", attempt=1, user_id=user_id, provider="p", model="primary",
        outcome=upb.USAGE_OUTCOME_SUCCEEDED, cost_usd=cost,
    )  # fmt: skip
    record.start_time.FromDatetime(at)
    return record


def budgeted(sim: SimulatorHandle, address: str) -> config.GatewayConfig:
    entry = Upstream("p", "openai", "primary", patient=True).entry(sim.base_url)
    # $100 per million tokens: "hi" with 20 output tokens at most reserves $0.0021.
    entry["models"][0].update(input_usd_per_mtok=100, output_usd_per_mtok=100)
    data = {
        "schema_service": address,
        "providers": [entry],
        "routes": {"default": ["p/primary"]},
        "limits": {"backend": "memory", "spend": {"users": {"usd_per_day": 0.01, "usd_per_month": 0.02}}},
    }
    return config.parse(data, source="test", env={"SIM_KEY": "sk-sim"})


async def test_a_memory_budget_starts_from_what_the_ledger_says_was_spent(
    sim: SimulatorHandle, migrated_db: str
) -> None:
    schema = RestartableSchemaServer(migrated_db)
    await schema.start()
    now = datetime.now(UTC)
    month_start = datetime(now.year, now.month, 1, tzinfo=UTC)
    channel = SchemaChannel(schema.address, ClientCredentials())
    outcomes: dict[str, grpc.StatusCode | None] = {}
    try:
        await usage_sender(channel)(
            upb.RecordUsageRequest(
                records=[
                    spent("today", "0.009", now),  # $0.001 of today's $0.01 left: the reservation does not fit
                    spent("month", "0.019", month_start),  # $0.001 of the month's $0.02 left
                    spent("light", "0.0001", now),  # room for it
                ]
            )
        )
        async with usage_gateway(sim, schema.address, cfg=budgeted(sim, schema.address)) as gateway:
            for user_id in ("today", "month", "light"):
                request = pb.ChatRequest(model="default", messages=user("hi"), max_output_tokens=20, user_id=user_id)
                try:
                    await gateway.chat.Chat(request, timeout=10)
                    outcomes[user_id] = None
                except grpc.aio.AioRpcError as error:
                    outcomes[user_id] = error.code()
                    assert details(error, []).info.reason == "SPEND_BUDGET_EXHAUSTED", error
    finally:
        await channel.close()
        await schema.stop()
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert outcomes == {"today": exhausted, "month": exhausted, "light": None}
