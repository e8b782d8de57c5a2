"""What has no room is counted and logged with the number lost, never silently dropped: the usage feed's buffer
while the schema service is away, and the spool's bound; both in the gateway's Prometheus exposition."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from gateway_service.chat.records import LedgerEntry
from gateway_service.config import TelemetrySettings, UsageFeedSettings
from gateway_service.domain.events import AttemptRecord
from gateway_service.domain.request import ChatRequest
from gateway_service.instruments import GatewayMetrics
from gateway_service.sender import SendError
from gateway_service.telemetry import Telemetry
from gateway_service.usage import UsageFeed
from schemaservice.v1 import usage_service_pb2 as upb
from servicekit.metrics import Registry

pytestmark = pytest.mark.timeout(30)


def entry(index: int) -> LedgerEntry:
    request = ChatRequest(model="m", messages=(), request_id=f"r-{index}")
    return LedgerEntry(request, AttemptRecord(1, "p", "m", duration_s=0.1), "k", 1_700_000_000_000_000_000, None, False)


async def away(batch: upb.RecordUsageRequest) -> None:
    raise SendError("UNAVAILABLE", "connection refused", retryable=True)


def exposition(feed: UsageFeed) -> str:
    registry = Registry()
    GatewayMetrics(registry).watch(list, Telemetry(TelemetrySettings(), None), feed)
    return generate_latest(registry.registry).decode()


async def test_records_past_the_buffer_are_counted_and_logged_with_the_number_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = UsageFeed(UsageFeedSettings(buffer_size=3, retry_initial_s=0.01), away)
    with caplog.at_level(logging.WARNING, logger="gateway_service.sender"):
        for index in range(5):
            feed.record(entry(index))
    assert feed.sender.waiting == 3 and feed.sender.dropped == {"buffer_full": 2}
    (line,) = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert line.getMessage() == "usage records dropped (buffer full)"
    assert line.dropped == 1 and line.reason == "buffer_full"  # type: ignore[attr-defined]  # the first, at once
    text = exposition(feed)
    assert 'llm_gateway_usage_dropped_records_total{reason="buffer_full"} 2.0' in text
    assert "llm_gateway_usage_buffered_records 3.0" in text


async def test_a_batch_past_the_spool_bound_is_counted_as_spool_full(tmp_path: Path) -> None:
    written: list[Sequence[upb.UsageRecord]] = []

    async def stored(batch: upb.RecordUsageRequest) -> None:
        written.append(batch.records)

    settings = UsageFeedSettings(spool_dir=str(tmp_path), spool_max_bytes=10)  # no frame fits
    feed = UsageFeed(settings, stored)
    assert feed.spool is not None
    feed.spool.replay()
    feed.record(entry(1))
    await feed._spool_step()
    await feed.close()
    assert feed.sender.dropped == {"spool_full": 1} and not written and feed.spool.size == 0
    assert 'llm_gateway_usage_dropped_records_total{reason="spool_full"} 1.0' in exposition(feed)
