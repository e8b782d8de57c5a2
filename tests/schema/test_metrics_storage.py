"""Partitions ahead of time and on demand, retention by dropping partitions, query aggregates, baselines."""

from __future__ import annotations

import asyncio
import math
import os
import statistics
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from schema_service.config import MetricsSettings, MigrationSettings
from schema_service.drift.verify import verify
from schema_service.metrics.jobs import Housekeeping
from schemaservice.v1 import metrics_service_pb2 as pb
from schemaservice.v1 import metrics_service_pb2_grpc
from servicekit.procs import ServiceProcess
from tests.schema.metrics_helpers import count_rows, metric, metrics_server, violations


async def partitions(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'system_performance_metrics'::regclass ORDER BY 1"
        )
    finally:
        await conn.close()
    return [r["relname"] for r in rows]


def name_of(moment: datetime) -> str:
    return f"system_performance_metrics_p{moment:%Y%m%d}"


async def test_partitions_are_created_ahead_and_on_demand_and_are_not_drift(migrated_db: str) -> None:
    now = datetime.now(UTC)
    async with metrics_server(migrated_db, partitions_ahead_days=2) as running:
        await Housekeeping(running.app.settings.metrics).run_once(running.app.require_pool(), now=now)
        assert await partitions(migrated_db) == [name_of(now + timedelta(days=n)) for n in range(3)]
        old = now - timedelta(days=3)
        await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="old", metrics=[metric(at=old)]))
    assert name_of(old) in await partitions(migrated_db)
    assert await count_rows(migrated_db) == 1
    assert await verify(migrated_db, MigrationSettings()) == []


async def test_retention_drops_whole_partitions_and_forgets_old_request_ids(migrated_db: str) -> None:
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=10), now - timedelta(minutes=5)
    batch = [metric(1.0, at=old), metric(2.0, at=old), metric(3.0, at=recent)]
    async with metrics_server(migrated_db) as running:
        await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="mixed", metrics=batch))
        keep_five_days = MetricsSettings(retention_days=5, idempotency_window_s=60)
        report = await Housekeeping(keep_five_days).run_once(running.app.require_pool(), now=now + timedelta(minutes=2))
    assert report.dropped == [old.date().isoformat()]
    assert report.request_ids_purged == 1
    assert name_of(old) not in await partitions(migrated_db)
    assert await count_rows(migrated_db) == 1
    assert await count_rows(migrated_db, "metric_write_requests") == 0


def percentile(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ts(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def test_query_aggregates_match_values_computed_here(migrated_db: str) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=40)
    expected: list[list[float]] = [[], [], []]
    metrics = []
    for bucket in range(3):
        for i in range(17 + bucket * 5):
            value = float((i * 7919 + bucket * 31) % 101) / 3
            expected[bucket].append(value)
            at = start + timedelta(minutes=10 * bucket, seconds=i * 10)
            metrics += [metric(value, at=at, labels={"provider": "a"}), metric(-value, at=at, labels={"provider": "b"})]
    request = pb.QueryMetricsRequest(
        name="llm.latency_ms",
        labels={"provider": "a"},
        start_time=ts(start),
        end_time=ts(start + timedelta(minutes=30)),
        bucket_width=duration_pb2.Duration(seconds=600),
        aggregates=[pb.Aggregate.Value(f"AGGREGATE_{a}") for a in ("SUM", "MIN", "MAX", "AVG", "P50", "P95", "P99")],
    )
    async with metrics_server(migrated_db) as running:
        await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="q", metrics=metrics))
        buckets = (await running.stub.QueryMetrics(request)).buckets
        whole = (await running.stub.QueryMetrics(pb.QueryMetricsRequest(name="llm.latency_ms"))).buckets
    assert [b.start_time.ToDatetime(UTC) for b in buckets] == [start + timedelta(minutes=10 * k) for k in range(3)]
    for got, values in zip(buckets, expected, strict=True):
        assert got.count == len(values)
        assert got.sum == pytest.approx(math.fsum(values))
        assert (got.min, got.max) == (min(values), max(values))
        assert got.avg == pytest.approx(statistics.fmean(values))
        for field, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert getattr(got, field) == pytest.approx(percentile(values, fraction))
    assert [b.count for b in whole] == [2 * sum(map(len, expected))]
    assert not whole[0].HasField("sum")


async def test_bad_queries_name_the_field(migrated_db: str) -> None:
    now = datetime.now(UTC)
    bad = [
        (pb.QueryMetricsRequest(name=""), "name"),
        (pb.QueryMetricsRequest(name="m", start_time=ts(now), end_time=ts(now - timedelta(1))), "end_time"),
        (pb.QueryMetricsRequest(name="m", bucket_width=duration_pb2.Duration(nanos=1000)), "bucket_width"),
        (pb.QueryMetricsRequest(name="m", aggregates=[42]), "aggregates"),  # type: ignore[list-item]
    ]
    async with metrics_server(migrated_db) as running:
        for request, field in bad:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await running.stub.QueryMetrics(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert list(violations(caught.value)) == [field]


async def test_baselines_and_anomalies_are_computed_and_listed(migrated_db: str) -> None:
    now = datetime.now(UTC)
    normal = [100.0 + (i * 37) % 11 - 5 for i in range(60)]
    values = [*normal, 1000.0]
    metrics = [metric(v, at=now - timedelta(seconds=len(values) - i)) for i, v in enumerate(values)]
    metrics += [metric(5.0, name="sparse.metric") for _ in range(3)]
    settings = MetricsSettings(baseline_min_samples=30, anomaly_z_score=4.0)
    async with metrics_server(migrated_db) as running:
        await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="b", metrics=metrics))
        run = await Housekeeping(settings).run_once(running.app.require_pool(), now=now + timedelta(seconds=1))
        again = await Housekeeping(settings).run_once(running.app.require_pool(), now=now + timedelta(seconds=2))
        baselines = (await running.stub.ListBaselines(pb.ListBaselinesRequest())).baselines
        anomalies = (await running.stub.ListAnomalies(pb.ListAnomaliesRequest(name="llm.latency_ms"))).anomalies
    mean, stddev = statistics.fmean(values), statistics.pstdev(values)
    assert (run.baselines.baselines, run.baselines.anomalies, again.baselines.anomalies) == (1, 1, 0)
    assert [(b.name, dict(b.labels), b.sample_count) for b in baselines] == [
        ("llm.latency_ms", {"provider": "openai"}, 61)
    ]
    assert (baselines[0].mean, baselines[0].stddev) == (pytest.approx(mean), pytest.approx(stddev))
    assert [(a.value, dict(a.labels)) for a in anomalies] == [(1000.0, {"provider": "openai"})]
    assert anomalies[0].z_score == pytest.approx((1000.0 - mean) / stddev)


@pytest.mark.timeout(60)
async def test_the_server_process_runs_housekeeping_with_settings_from_the_environment(empty_db: str) -> None:
    env = {
        **os.environ,
        "SCHEMA_SERVICE_METRICS_PARTITIONS_AHEAD_DAYS": "4",
        "SCHEMA_SERVICE_METRICS_MAX_BATCH_METRICS": "2",
    }
    today = datetime.now(UTC)
    expected = [name_of(today + timedelta(days=n)) for n in range(5)]
    with ServiceProcess("schema-service", "--database-url", empty_db, env=env) as service:
        await service.wait_serving("readiness")  # the schema was migrated at start
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.WriteMetrics(pb.WriteMetricsRequest(request_id="three", metrics=[metric()] * 3))
        while await partitions(empty_db) != expected:  # polled: the first run starts once the service is ready
            await asyncio.sleep(0.05)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_batch_metrics=2" in (caught.value.details() or "")
