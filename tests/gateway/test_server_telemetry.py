"""Telemetry: each attempt's metrics reach the real schema service (WriteMetrics through the generated
stubs, PostgreSQL behind it), and so do the rate-limit budgets' counts; a full buffer drops and counts
instead of blocking a chat."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import grpc
import pytest

from gateway_service import config
from gateway_service.config import TelemetrySettings
from gateway_service.domain.events import AttemptRecord, AttemptUsage
from gateway_service.domain.failures import FailureKind
from gateway_service.schema_channel import SchemaChannel, metrics_sender
from gateway_service.sender import SendError
from gateway_service.telemetry import Telemetry
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from schemaservice.v1 import metrics_service_pb2 as mpb
from schemaservice.v1 import metrics_service_pb2_grpc
from servicekit.tls import ClientCredentials
from tests.gateway.e2e_helpers import Upstream, gateway, serving, stream, user
from tests.gateway.pipeline_helpers import chat_request
from tests.schemaserver import schema_server, settings_for


@asynccontextmanager
async def schema_service(dsn: str) -> AsyncIterator[tuple[str, metrics_service_pb2_grpc.MetricsServiceStub]]:
    """The real schema service as `serve` starts it (tests/schemaserver.py), with its address."""
    async with schema_server(settings_for(dsn)) as running:
        address = f"127.0.0.1:{running.port}"
        async with grpc.aio.insecure_channel(address) as channel:
            yield address, metrics_service_pb2_grpc.MetricsServiceStub(channel)


async def test_attempt_metrics_reach_the_schema_service(sim: SimulatorHandle, migrated_db: str) -> None:
    async with schema_service(migrated_db) as (address, metrics):
        upstreams = [Upstream("p", "openai", "primary"), Upstream("f", "openai", "fallback", patient=True)]
        async with gateway(sim, upstreams, env={"SIM_KEY": "sk-sim", "SCHEMA_SERVICE_ADDR": address}) as h:
            telemetry = h.running.gateway.telemetry
            assert telemetry.enabled
            await stream(h, pb.StreamChatRequest(model="default", messages=user("hi [[fault:500 model=primary]]")))
            await telemetry.flush()
            # failed attempt: duration; successful one: duration, ttft, input, output tokens, cost
            assert telemetry.sent == 6 and telemetry.dropped == 0
        query = mpb.QueryMetricsRequest(name="llm.attempt.duration", aggregates=[mpb.AGGREGATE_COUNT])
        query.start_time.FromSeconds(0)
        query.end_time.FromSeconds(int(time.time()) + 60)
        for outcome, provider in (("server_error", "p"), ("ok", "f")):
            selected = mpb.QueryMetricsRequest()
            selected.CopyFrom(query)
            selected.labels.update({"outcome": outcome, "provider": provider})
            answer = await metrics.QueryMetrics(selected, timeout=5)
            assert sum(b.count for b in answer.buckets) == 1, outcome


async def test_attempt_cost_sums_exactly_in_the_schema_service(migrated_db: str) -> None:
    """Ten attempts of $0.10 cost $1 to the micro-dollar: as floats the sum would be 0.9999999999999999."""
    usage = AttemptUsage("p", "m", 1, input_tokens=1, output_tokens=1, cost_usd=Decimal("0.1"))
    async with schema_service(migrated_db) as (address, metrics):
        channel = SchemaChannel(address, ClientCredentials())
        try:
            telemetry = Telemetry(TelemetrySettings(flush_interval_s=60), metrics_sender(channel))
            for _ in range(10):
                telemetry.observe(chat_request(), AttemptRecord(1, "p", "m", None, "", 0.1, usage=usage), None)
            await telemetry.flush()
        finally:
            await channel.close()
        query = mpb.QueryMetricsRequest(name="llm.attempt.cost_micro_usd", aggregates=[mpb.AGGREGATE_SUM])
        query.start_time.FromSeconds(0)
        query.end_time.FromSeconds(int(time.time()) + 60)
        answer = await metrics.QueryMetrics(query, timeout=5)
    assert sum([0.1] * 10) != 1.0  # what dollars as floats drift by
    assert [b.sum for b in answer.buckets if b.count] == [1_000_000.0]


async def test_limiter_fail_opens_reach_the_schema_service(sim: SimulatorHandle, migrated_db: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    async with schema_service(migrated_db) as (address, metrics):
        data = {
            "providers": [Upstream("p", "openai", "primary").entry(sim.base_url)],
            "routes": {"default": ["p/primary"]},
            "telemetry": {"flush_interval_s": 60},  # only the flush below sends: nothing is in flight at the query
            "limits": {
                "backend": "redis",
                "redis_url": f"redis://:s3cret@127.0.0.1:{closed_port}/0",
                "users": {"requests_per_minute": 1},
            },
        }
        cfg = config.parse(data, source="test", env={"SIM_KEY": "sk-sim", "SCHEMA_SERVICE_ADDR": address})
        sim.simulator.clear()
        async with serving(sim, cfg) as h:
            for _ in range(3):  # a budget of one a minute, yet all three go ahead
                await h.chat.Chat(pb.ChatRequest(model="default", messages=user("hi"), user_id="alice"), timeout=5)
            gateway_ = h.running.gateway
            assert gateway_.budgets is not None
            fail_open_total = gateway_.budgets.limiter.fail_open_total  # type: ignore[attr-defined]
            await gateway_.telemetry.flush()
        query = mpb.QueryMetricsRequest(name="llm.limits.fail_open", aggregates=[mpb.AGGREGATE_SUM])
        query.labels.update({"backend": "redis"})
        query.start_time.FromSeconds(0)
        query.end_time.FromSeconds(int(time.time()) + 60)
        answer = await metrics.QueryMetrics(query, timeout=5)
        assert fail_open_total == 3 and sum(b.sum for b in answer.buckets) == 3.0


async def test_counts_wait_for_room_in_a_full_buffer_and_none_is_lost() -> None:
    sent: list[mpb.Metric] = []

    async def send(batch: mpb.WriteMetricsRequest) -> None:
        sent.extend(batch.metrics)

    telemetry = Telemetry(TelemetrySettings(buffer_size=2, batch_size=2, flush_interval_s=60), send)
    for _ in range(2):
        telemetry.observe(chat_request(), AttemptRecord(1, "p", "m", FailureKind.TIMEOUT, "slow", 0.5), None)
    for labels in ({"provider": "a"}, {"provider": "a"}, {"provider": "b"}, {"provider": "c"}):
        telemetry.count("llm.limits.candidate_skipped", labels)
    await telemetry.flush()
    assert [m.name for m in sent] == ["llm.attempt.duration"] * 2  # the buffer had no room for the counts yet
    for _ in range(2):
        await telemetry.flush()
    counts = {m.labels["provider"]: m.value for m in sent if m.unit == "count"}
    assert counts == {"a": 2.0, "b": 1.0, "c": 1.0} and telemetry.dropped == 0

    disabled = Telemetry(TelemetrySettings(), None)
    disabled.count("llm.limits.fail_open", {})  # without a schema service counting is a no-op
    assert not disabled.sender.waiting and not disabled._counts


async def test_a_full_buffer_drops_and_counts_without_blocking(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()
    sent: list[int] = []

    async def slow_send(batch: mpb.WriteMetricsRequest) -> None:
        await release.wait()
        sent.append(len(batch.metrics))

    telemetry = Telemetry(TelemetrySettings(buffer_size=4, batch_size=2, flush_interval_s=60), slow_send)
    record = AttemptRecord(1, "p", "m", FailureKind.TIMEOUT, "slow", 0.5)
    with caplog.at_level(logging.WARNING, logger="gateway_service.sender"):
        for _ in range(10):
            telemetry.observe(chat_request(), record, None)  # synchronous: can never wait on the schema service
    assert telemetry.sender.waiting == 4 and telemetry.sender.dropped == {"buffer_full": 6}
    assert [r.getMessage() for r in caplog.records] == ["metrics dropped (buffer full)"]  # once, not six times
    assert caplog.records[0].dropped == 1 and caplog.records[0].reason == "buffer_full"  # type: ignore[attr-defined]
    flushing = asyncio.create_task(telemetry.flush())
    release.set()
    await flushing
    assert sent == [2, 2] and telemetry.sent == 4


async def test_a_batch_the_schema_service_refuses_is_dropped_at_once_not_retried(
    migrated_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with schema_service(migrated_db) as (address, _):
        channel = SchemaChannel(address, ClientCredentials())
        try:
            bad = mpb.WriteMetricsRequest(request_id="bad", metrics=[mpb.Metric(name="", value=1.0, unit="ms")])
            with pytest.raises(SendError, match="^INVALID_ARGUMENT") as caught:
                await metrics_sender(channel)(bad)
            assert caught.value.code == "INVALID_ARGUMENT" and not caught.value.retryable
        finally:
            await channel.close()

    calls: list[str] = []

    async def refusing(batch: mpb.WriteMetricsRequest) -> None:
        calls.append(batch.request_id)
        raise SendError("INVALID_ARGUMENT", "metrics[0].name: required", retryable=False)

    telemetry = Telemetry(TelemetrySettings(buffer_size=10, batch_size=5, flush_interval_s=60), refusing)
    telemetry.observe(chat_request(), AttemptRecord(1, "p", "m", None, "", 0.1), None)
    with caplog.at_level(logging.WARNING, logger="gateway_service.sender"):
        await telemetry.flush()
    assert len(calls) == 1
    assert telemetry.sent == 0 and telemetry.sender.dropped == {"rejected": 1}
    (line,) = caplog.records
    assert line.getMessage() == "metrics dropped (rejected)"
    assert (line.code, line.cause) == ("INVALID_ARGUMENT", "metrics[0].name: required")  # type: ignore[attr-defined]
