"""Metrics reads are bounded: a statement timeout on every query, and a limit on the labels asked for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from schemaservice.v1 import metrics_service_pb2 as pb
from schemaservice.v1.metrics_service_pb2_grpc import MetricsServiceStub
from tests.schema.metrics_helpers import details, metrics_server, violations


def _query(**labels: str) -> pb.QueryMetricsRequest:
    query = pb.QueryMetricsRequest(name="llm.latency_ms", labels=labels, aggregates=[pb.AGGREGATE_SUM])
    query.start_time.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    return query


@pytest.mark.parametrize(
    "call",
    [
        lambda stub: stub.QueryMetrics(_query(), timeout=10),
        lambda stub: stub.ListBaselines(pb.ListBaselinesRequest(), timeout=10),
        lambda stub: stub.ListAnomalies(pb.ListAnomaliesRequest(), timeout=10),
    ],
)
async def test_a_query_stuck_in_the_database_is_cancelled_by_its_statement_timeout(
    migrated_db: str, call: Callable[[MetricsServiceStub], Awaitable[object]]
) -> None:
    # The lock is taken once the server is up: its first housekeeping (usage reconciliation) reads metric_series.
    async with metrics_server(migrated_db, query_timeout_s=0.2) as running:
        blocker = await asyncpg.connect(migrated_db)
        try:
            async with blocker.transaction():
                # The query waits on this lock; its statement timeout, not the caller's deadline, must end it.
                await blocker.execute("LOCK TABLE metric_series IN ACCESS EXCLUSIVE MODE")
                with pytest.raises(grpc.aio.AioRpcError) as stuck:
                    await call(running.stub)
        finally:
            await blocker.close()

    assert stuck.value.code() == grpc.StatusCode.UNAVAILABLE
    info = details(stuck.value)["ErrorInfo"]
    assert (info.reason, info.metadata["sqlstate"]) == ("DATABASE_CONFLICT", "57014")  # type: ignore[attr-defined]


async def test_a_query_with_more_labels_than_a_series_can_have_is_refused_naming_labels(migrated_db: str) -> None:
    async with metrics_server(migrated_db) as running:
        with pytest.raises(grpc.aio.AioRpcError) as many:
            await running.stub.QueryMetrics(_query(**{f"k{i}": "v" for i in range(17)}), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as long_value:
            await running.stub.QueryMetrics(_query(provider="x" * 257), timeout=10)

    assert many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(many.value) == {"labels": "at most 16 labels (a series has no more)"}
    assert long_value.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(long_value.value) == {"labels['provider']": "at most 256 characters"}
