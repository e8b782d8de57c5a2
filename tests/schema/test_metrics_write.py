"""Writes through a real server: stored once, idempotent across restarts, columnar, streaming, backpressure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from schema_service.config import MetricsSettings
from schema_service.database import create_pool
from schema_service.errors import DeadlineExceeded
from schema_service.metrics.validation import BatchParser
from schema_service.metrics.wire import received
from schema_service.metrics.writer import MetricsWriter, WriteResult
from schemaservice.v1 import metrics_service_pb2 as pb
from servicekit.procs import free_port
from tests.pg import database_of
from tests.schema.metrics_helpers import count_rows, details, metric, metrics_server, wait_for_lock_waiters


async def test_a_batch_is_stored_with_labels_once_per_series(migrated_db: str) -> None:
    metrics = [metric(float(i), labels={"provider": p, "model": "m"}) for i in range(50) for p in ("a", "b")]
    metrics[0].metadata.update({"attempt": 2, "cached": True})
    async with metrics_server(migrated_db) as running:
        response = await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="w1", metrics=metrics))
    assert (response.written_count, response.duplicate) == (100, False)
    conn = await asyncpg.connect(migrated_db)
    try:
        series = await conn.fetch("SELECT name, unit, labels FROM metric_series ORDER BY labels::text")
        stored = await conn.fetch(
            "SELECT m.value, m.metadata, s.labels FROM system_performance_metrics m JOIN metric_series s "
            "USING (series_id) ORDER BY m.time, s.labels::text"
        )
    finally:
        await conn.close()
    assert [json.loads(r["labels"]) for r in series] == [{"model": "m", "provider": p} for p in ("a", "b")]
    assert {(r["name"], r["unit"]) for r in series} == {("llm.latency_ms", "ms")}
    assert sorted(r["value"] for r in stored) == sorted(m.value for m in metrics)
    assert [json.loads(r["metadata"]) for r in stored if r["metadata"]] == [{"attempt": 2, "cached": True}]


async def test_a_retried_request_id_is_acknowledged_without_writing_again_also_after_a_restart(
    migrated_db: str,
) -> None:
    request = pb.WriteMetricsRequest(request_id="retry-me", metrics=[metric(float(i)) for i in range(10)])
    async with metrics_server(migrated_db) as first:
        stored = await first.stub.WriteMetrics(request)
        again = await first.stub.WriteMetrics(request)
        empty = await first.stub.ListBaselines(pb.ListBaselinesRequest())
    assert (stored.duplicate, stored.summary) == (False, "stored 10 metrics")
    assert (again.written_count, again.duplicate) == (10, True)
    assert again.summary == (
        "duplicate of request_id 'retry-me', whose first call stored 10 metrics; nothing was written now"
    )
    assert (list(empty.baselines), empty.summary) == ([], "no baselines yet")
    async with metrics_server(migrated_db) as restarted:
        after_restart = await restarted.stub.WriteMetrics(request)
    assert (after_restart.written_count, after_restart.duplicate) == (10, True)
    assert await count_rows(migrated_db) == 10


async def test_a_request_id_reused_for_another_batch_is_refused(migrated_db: str) -> None:
    async with metrics_server(migrated_db) as running:
        await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="same", metrics=[metric()]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="same", metrics=[metric(), metric()]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)["ErrorInfo"].reason == "REQUEST_ID_REUSED"  # type: ignore[attr-defined]
    assert await count_rows(migrated_db) == 1


async def test_columnar_and_per_metric_forms_are_stored_together(migrated_db: str) -> None:
    now_ns = int(datetime.now(UTC).timestamp() * 1e9)
    columns = pb.MetricColumns(
        series=[pb.MetricSeries(name="tokens", unit="tok", labels={"model": "x"}), pb.MetricSeries(name="cost")],
        series_indexes=[0, 1, 0, 1],
        times_unix_nanos=[now_ns + i * 1000 for i in range(4)],
        values=[10.0, 0.5, 20.0, 1.5],
    )
    single = metric(7.0, name="tokens", unit="tok")
    request = pb.WriteMetricsRequest(request_id="cols", metrics=[single], columns=columns)
    async with metrics_server(migrated_db) as running:
        assert (await running.stub.WriteMetrics(request)).written_count == 5
    conn = await asyncpg.connect(migrated_db)
    try:
        sums = dict(
            await conn.fetch(
                "SELECT s.name, sum(m.value) FROM system_performance_metrics m JOIN metric_series s "
                "USING (series_id) GROUP BY 1"
            )
        )
        micros = await conn.fetchval("SELECT min(time) FROM system_performance_metrics m WHERE value = 10")
    finally:
        await conn.close()
    assert sums == {"tokens": 37.0, "cost": 2.0}
    assert micros == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=now_ns // 1000)


async def test_stream_acknowledges_each_committed_batch_in_order(migrated_db: str) -> None:
    ids = [f"s-{i}" for i in range(8)] + ["s-3"]
    at = datetime.now(UTC)  # the retried s-3 must carry the same metrics, times included

    async def batches() -> AsyncIterator[pb.StreamMetricsRequest]:
        for request_id in ids:
            yield pb.StreamMetricsRequest(request_id=request_id, metrics=[metric(float(i), at=at) for i in range(25)])

    async with metrics_server(migrated_db) as running:
        acks = [ack async for ack in running.stub.StreamMetrics(batches())]
    assert [a.request_id for a in acks] == ids
    assert all(a.written_count == 25 for a in acks)
    # Batches of one stream are written concurrently, so either s-3 may be the one found stored.
    assert [a.duplicate for a in acks if a.request_id != "s-3"] == [False] * 7
    assert sorted(a.duplicate for a in acks if a.request_id == "s-3") == [False, True]
    assert await count_rows(migrated_db) == 8 * 25


async def test_stream_ends_with_the_error_of_a_bad_batch_after_acknowledging_the_good_ones(migrated_db: str) -> None:
    async def batches() -> AsyncIterator[pb.StreamMetricsRequest]:
        yield pb.StreamMetricsRequest(request_id="good", metrics=[metric()])
        yield pb.StreamMetricsRequest(request_id="bad", metrics=[metric(float("nan"))])

    acks: list[str] = []
    async with metrics_server(migrated_db, stream_window=1) as running:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for ack in running.stub.StreamMetrics(batches()):
                acks.append(ack.request_id)
    assert acks == ["good"]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metrics[0].value" in str(details(caught.value)["BadRequest"])
    assert await count_rows(migrated_db) == 1


async def test_database_not_reachable_gives_unavailable_with_retry_info() -> None:
    nothing_there = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    async with metrics_server(nothing_there, ready=False) as running:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="x", metrics=[metric()]))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    found = details(caught.value)
    assert found["ErrorInfo"].reason == "DATABASE_UNAVAILABLE"  # type: ignore[attr-defined]
    assert found["RetryInfo"].retry_delay.ToTimedelta() > timedelta(0)  # type: ignore[attr-defined]


async def test_too_many_writes_in_flight_gives_resource_exhausted_with_retry_info(migrated_db: str) -> None:
    admin = await asyncpg.connect(migrated_db)
    try:
        async with metrics_server(migrated_db, max_in_flight_batches=1, admission_wait_s=0.05) as running:
            blocker = admin.transaction()
            await blocker.start()
            await admin.execute("LOCK TABLE metric_write_requests IN EXCLUSIVE MODE")
            first = asyncio.ensure_future(
                running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="first", metrics=[metric()]))
            )
            await wait_for_lock_waiters(admin, database_of(migrated_db), 1)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="second", metrics=[metric()]))
            await blocker.rollback()
            assert (await first).written_count == 1
    finally:
        await admin.close()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    found = details(caught.value)
    assert found["ErrorInfo"].metadata["limit"] == "max_in_flight_batches"  # type: ignore[attr-defined]
    assert found["RetryInfo"].retry_delay.ToTimedelta() > timedelta(0)  # type: ignore[attr-defined]
    assert await count_rows(migrated_db) == 1


async def test_shutdown_ends_a_stream_with_unavailable_after_acknowledging_what_it_took(migrated_db: str) -> None:
    sent = asyncio.Queue[pb.StreamMetricsRequest | None]()

    async def batches() -> AsyncIterator[pb.StreamMetricsRequest]:
        while (request := await sent.get()) is not None:
            yield request

    async with metrics_server(migrated_db) as running:
        call = running.stub.StreamMetrics(batches())
        await sent.put(pb.StreamMetricsRequest(request_id="before", metrics=[metric()]))
        assert (await call.read()).request_id == "before"
        await running.lifecycle.begin_shutdown()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        await sent.put(None)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert details(caught.value)["ErrorInfo"].reason == "SERVER_SHUTTING_DOWN"  # type: ignore[attr-defined]
    assert await count_rows(migrated_db) == 1


async def test_a_write_that_cannot_finish_before_the_deadline_is_abandoned_then_retried(migrated_db: str) -> None:
    settings = MetricsSettings()
    batch = BatchParser(settings).parse(received(pb.WriteMetricsRequest(request_id="late", metrics=[metric()])))
    pool = await create_pool(migrated_db)
    admin = await asyncpg.connect(migrated_db)
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'schema-service' AND wait_event_type = 'Lock'"
    )
    try:
        writer = MetricsWriter(lambda: pool, settings)
        with pytest.raises(DeadlineExceeded, match="too little to start"):
            await writer.write(batch, timeout_s=0.001)
        lock = admin.transaction()
        await lock.start()
        await admin.execute("LOCK TABLE metric_write_requests IN EXCLUSIVE MODE")
        with pytest.raises(DeadlineExceeded, match="did not finish within"):
            await writer.write(batch, timeout_s=0.2)
        while await admin.fetchval(waiting):  # polled: the cancel request reaches the backend asynchronously
            await asyncio.sleep(0.01)
        await lock.rollback()
        assert await count_rows(migrated_db) == 0
        assert await writer.write(batch) == WriteResult(1, duplicate=False)
    finally:
        await admin.close()
        await pool.close()
    assert await count_rows(migrated_db) == 1
