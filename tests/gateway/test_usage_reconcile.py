"""Reconciliation: the ledger's tokens beside the gateways' own metered tokens, in QueryUsage and as a gauge
(the real gateway and schema service, PostgreSQL, gRPC)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2

from llm_simulator import SimulatorHandle
from schema_service.background import reconcile_last_hour
from schema_service.usage.reconcile import last_hour
from schemaservice.v1 import usage_service_pb2 as upb
from schemaservice.v1 import usage_service_pb2_grpc
from tests.gateway.schema_helpers import FAST_TELEMETRY
from tests.gateway.usage_helpers import Chats, usage_config, usage_gateway, within
from tests.schemaserver import RestartableSchemaServer

pytestmark = pytest.mark.timeout(60)


def unmetered(start: datetime, input_tokens: int) -> upb.UsageRecord:
    """A ledger row no gateway metered (as if its metric points were never sent)."""
    record = upb.UsageRecord(
        request_id=f"unmetered-{start.timestamp()}", attempt=1, provider="first", model="m-first",
        outcome=upb.USAGE_OUTCOME_SUCCEEDED, input_tokens=input_tokens, cost_usd="0",
    )  # fmt: skip
    record.start_time.FromDatetime(start)
    return record


async def test_query_usage_reports_the_drift_between_the_ledger_and_the_metrics(
    sim: SimulatorHandle, migrated_db: str
) -> None:
    schema = RestartableSchemaServer(migrated_db)
    await schema.start()
    since = timestamp_pb2.Timestamp(seconds=int(time.time()) - 600)
    try:
        cfg = usage_config(sim, schema.address).model_copy(update={"telemetry": FAST_TELEMETRY})
        async with usage_gateway(sim, schema.address, cfg=cfg) as gateway:
            chats = Chats()
            await gateway.run_chats(9, chats, concurrency=3)  # the first fails over: 10 attempts
            metrics = gateway.running.gateway.telemetry.sender
            await within(20, gateway.delivered(10))
            await within(20, metrics.until(lambda: not metrics.waiting))  # every attempt's metrics are queued
            assert metrics.sent and not metrics.dropped
        async with grpc.aio.insecure_channel(schema.address) as channel:
            usage = usage_service_pb2_grpc.UsageServiceStub(channel)
            agreed = await usage.QueryUsage(upb.QueryUsageRequest(start_time=since))
            await usage.RecordUsage(upb.RecordUsageRequest(records=[unmetered(datetime.now(UTC), 1000)]))
            drifted = await usage.QueryUsage(upb.QueryUsageRequest(start_time=since, provider="first"))
            by_user = await usage.QueryUsage(upb.QueryUsageRequest(start_time=since, user_id="nobody"))
            grouped = await usage.QueryUsage(
                upb.QueryUsageRequest(start_time=since, group_by=[upb.USAGE_DIMENSION_USER, upb.USAGE_DIMENSION_DAY])
            )
    finally:
        await schema.stop()
    checked = agreed.reconciliation
    assert checked.ledger_input_tokens == checked.metered_input_tokens == agreed.total.input_tokens > 0
    assert checked.ledger_output_tokens == checked.metered_output_tokens == agreed.total.output_tokens > 0
    assert (checked.input_drift_tokens, checked.output_drift_tokens) == (0, 0)
    after = drifted.reconciliation
    assert after.input_drift_tokens == 1000 and after.output_drift_tokens == 0  # the unmetered row
    assert after.ledger_input_tokens == after.metered_input_tokens + 1000 > 1000  # the provider's own share
    assert after.metered_input_tokens < checked.metered_input_tokens  # filtered: the second provider's left out
    assert not by_user.HasField("reconciliation") and not grouped.HasField("reconciliation")  # nor users
    assert grouped.groups  # the query itself answered


async def test_the_periodic_job_sets_the_drift_gauge_for_the_last_whole_hour(migrated_db: str) -> None:
    schema = RestartableSchemaServer(migrated_db)
    await schema.start()
    start, end = last_hour(datetime.now(UTC))
    assert end - start == timedelta(hours=1) and end <= datetime.now(UTC) - timedelta(minutes=15)
    try:
        async with grpc.aio.insecure_channel(schema.address) as channel:
            usage = usage_service_pb2_grpc.UsageServiceStub(channel)
            await usage.RecordUsage(upb.RecordUsageRequest(records=[unmetered(start + timedelta(minutes=1), 250)]))
        running = schema._running
        assert running is not None and running.app.instruments is not None
        await reconcile_last_hour(running.app)
        assert running.app.instruments.database.usage_drift == (250, 0)
        text = "\n".join(str(m) for m in running.metrics.registry.collect())
    finally:
        await schema.stop()
    assert "schema_service_usage_drift_tokens" in text
