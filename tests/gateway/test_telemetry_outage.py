"""Metrics survive a schema-service restart: they wait in the gateway's bounded buffer, are retried with
backoff, and arrive exactly once when it is back (the real schema service, PostgreSQL, gRPC between)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway_service.schema_channel import SchemaChannel, metrics_sender
from gateway_service.sender import BufferedSender, SendError, SenderSettings
from llm_simulator import SimulatorHandle
from schemaservice.v1 import metrics_service_pb2 as mpb
from servicekit.tls import ClientCredentials
from tests.gateway.schema_helpers import METRICS_PER_CHAT, Reporting, stored, with_reporting
from tests.schemaserver import RestartableSchemaServer
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.timeout(60)
Exposed = dict[tuple[str, tuple[tuple[str, str], ...]], float]
BUDGET_S = 20  # only a broken sender waits this long


async def test_metrics_of_chats_during_a_restart_arrive_once_it_is_back(
    sim: SimulatorHandle, migrated_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = RestartableSchemaServer(migrated_db)
    await schema.start()

    async def restart_during_chats(gateway: Reporting) -> None:
        await gateway.chats(5)
        await asyncio.wait_for(gateway.until(lambda s: s.sent == 5 * METRICS_PER_CHAT), BUDGET_S)
        await schema.stop()
        await gateway.chats(10)
        # Longer than the 3 tries in 0.6 s that used to drop a batch: six failed tries of one batch.
        await asyncio.wait_for(gateway.until(lambda s: s.failures["UNAVAILABLE"] >= 6), BUDGET_S)
        assert gateway.sender.waiting == 10 * METRICS_PER_CHAT and not gateway.sender.dropped
        await schema.start()
        await gateway.chats(5)
        await asyncio.wait_for(gateway.until(lambda s: s.sent == 20 * METRICS_PER_CHAT), BUDGET_S)
        assert not gateway.sender.dropped
        exposed = exposition(gateway)
        assert exposed[("llm_gateway_telemetry_send_failures_total", (("code", "UNAVAILABLE"),))] >= 6
        assert exposed[("llm_gateway_telemetry_sent_metrics_total", ())] == 20 * METRICS_PER_CHAT
        for reason in ("buffer_full", "rejected", "expired", "shutdown"):
            assert exposed[("llm_gateway_telemetry_dropped_metrics_total", (("reason", reason),))] == 0

    try:
        with caplog.at_level(logging.INFO, logger="gateway_service.sender"):
            await with_reporting(sim, schema.address, restart_during_chats)
    finally:
        await schema.stop()
    assert await stored(migrated_db) == (20 * METRICS_PER_CHAT, 0)  # every metric, none twice
    lines = [r for r in caplog.records if r.name == "gateway_service.sender.metrics"]
    failed = [r for r in lines if r.getMessage() == "metrics not delivered to the schema service; retrying"]
    assert failed and failed[0].code == "UNAVAILABLE" and failed[0].cause  # type: ignore[attr-defined]
    assert len(failed) == 1  # rate-limited: one line for the outage, not one per try
    assert [r.getMessage() for r in lines if r.levelno == logging.INFO] == ["metrics delivered again"]
    assert not [r for r in lines if "dropped" in r.getMessage()]


def exposition(gateway: Reporting) -> Exposed:
    """The gateway's Prometheus samples, as a scrape reads them."""
    text = generate_latest(gateway.running.metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_retried_batch_keeps_its_request_id_and_is_stored_once(migrated_db: str) -> None:
    """The schema service commits a batch but its answer is lost: the retry, same request_id, is not a double."""
    schema = RestartableSchemaServer(migrated_db)
    await schema.start()
    channel = SchemaChannel(schema.address, ClientCredentials())
    write = metrics_sender(channel)
    ids: list[str] = []

    async def answer_lost_once(request_id: str, metrics: Sequence[mpb.Metric]) -> None:
        ids.append(request_id)
        await write(mpb.WriteMetricsRequest(request_id=request_id, metrics=metrics))
        if len(ids) == 1:  # stored, but the gateway never heard so (a restart between commit and answer)
            raise SendError("UNAVAILABLE", "connection reset", retryable=True)

    sender: BufferedSender[mpb.Metric] = BufferedSender(
        "metrics", SenderSettings(10, 10, 60, retry_initial_s=0.01), answer_lost_once
    )
    metrics = [mpb.Metric(name="llm.attempt.duration", value=float(i), unit="ms") for i in range(3)]
    for metric in metrics:
        metric.time.FromSeconds(int(time.time()))
    try:
        sender.put(metrics)
        await sender.flush()
    finally:
        await channel.close()
        await schema.stop()
    assert len(ids) == 2 and ids[0] == ids[1] and sender.sent == 3
    assert await stored(migrated_db) == (3, 0)


async def test_the_retry_info_of_the_schema_service_is_read_and_honoured(
    migrated_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, dsn = await TcpProxy.for_database(migrated_db)
    schema = RestartableSchemaServer(dsn)
    await schema.start()
    channel = SchemaChannel(schema.address, ClientCredentials())
    try:
        await proxy.cut()  # the database away: UNAVAILABLE, DATABASE_UNAVAILABLE, with a RetryInfo
        batch = mpb.WriteMetricsRequest(request_id="r-1", metrics=[mpb.Metric(name="x", value=1.0, unit="ms")])
        batch.metrics[0].time.FromSeconds(int(time.time()))
        with pytest.raises(SendError) as caught:
            await metrics_sender(channel)(batch)
    finally:
        await channel.close()
        await schema.stop()
        await proxy.cut()
    error = caught.value
    assert error.code == "UNAVAILABLE" and error.retryable and error.retry_after_s is not None
    assert error.retry_after_s > 0 and "database" in error.cause.lower()

    async def asks_to_wait(request_id: str, items: Sequence[int]) -> None:
        raise SendError("RESOURCE_EXHAUSTED", "too many writes", retryable=True, retry_after_s=7.0)

    never: BufferedSender[int] = BufferedSender(
        "items", SenderSettings(10, 10, 60, retry_initial_s=0.01, retry_max_s=0.02), asks_to_wait
    )
    never.put([1])
    with caplog.at_level(logging.WARNING, logger="gateway_service.sender"):
        await never.flush(deadline=time.monotonic() + 1.0)  # 7 s asked: not tried again within 1
    assert never.failures == {"RESOURCE_EXHAUSTED": 1} and never.waiting == 1
    (line,) = [r for r in caplog.records if r.name == "gateway_service.sender.items"]
    assert line.retry_in_s == 7.0 and line.code == "RESOURCE_EXHAUSTED"  # type: ignore[attr-defined]


async def test_backoff_doubles_with_jitter_up_to_its_cap_and_a_batch_expires() -> None:
    async def failing(request_id: str, items: Sequence[int]) -> None:
        raise SendError("UNAVAILABLE", "connection refused", retryable=True)

    settings = SenderSettings(4, 2, 60, retry_initial_s=1.0, retry_max_s=8.0, retry_for_s=0.05)
    sender: BufferedSender[int] = BufferedSender("items", settings, failing, rng=random.Random(1))
    waits = [sender._backoff(n) for n in range(1, 7)]
    for n, wait in enumerate(waits, start=1):
        ceiling = min(8.0, 2 ** (n - 1))
        assert ceiling / 2 <= wait <= ceiling
    assert len(set(waits)) == len(waits)  # jittered, not a fixed ladder

    fast = BufferedSender(
        "items", SenderSettings(4, 2, 60, retry_initial_s=0.01, retry_max_s=0.01, retry_for_s=0.05), failing
    )
    assert fast.put([1, 2]) and fast.put([3, 4]) and not fast.put([5])  # bounded: the fifth has no room
    await fast.flush()
    assert fast.dropped == {"buffer_full": 1, "expired": 4} and fast.waiting == 0


async def test_what_waits_at_shutdown_is_sent_within_the_grace(migrated_db: str) -> None:
    schema = RestartableSchemaServer(migrated_db)
    await schema.start()
    channel = SchemaChannel(schema.address, ClientCredentials())
    write = metrics_sender(channel)

    async def deliver(request_id: str, metrics: Sequence[mpb.Metric]) -> None:
        await write(mpb.WriteMetricsRequest(request_id=request_id, metrics=metrics))

    sender: BufferedSender[mpb.Metric] = BufferedSender("metrics", SenderSettings(100, 4, 60), deliver)
    metrics = [mpb.Metric(name="llm.attempt.duration", value=float(i), unit="ms") for i in range(10)]
    for metric in metrics:
        metric.time.FromSeconds(int(time.time()))
    try:
        assert sender.put(metrics)  # no loop runs and the interval is a minute: only the shutdown sends these
        await sender.close(5.0)
        assert not sender.put(metrics[:1])  # closed: counted as dropped at shutdown, not queued
    finally:
        await channel.close()
        await schema.stop()
    assert sender.sent == 10 and sender.dropped == {"shutdown": 1}
    assert await stored(migrated_db) == (10, 0)
