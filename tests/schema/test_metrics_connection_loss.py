"""The service's database connections are killed (pg_terminate_backend) while writes go on.

Afterwards the stored rows are exactly the acknowledged ones: none lost, none doubled.
Only this test database's `schema-service` backends are touched, never the shared server.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import grpc
import pytest

from schemaservice.v1 import metrics_service_pb2 as pb
from schemaservice.v1.metrics_service_pb2_grpc import MetricsServiceStub
from tests.pg import database_of
from tests.schema.metrics_helpers import count_rows, details, metric, metrics_server, wait_for_lock_waiters
from tests.tcpproxy import TcpProxy

WRITERS, BATCHES, BATCH_SIZE, KILL_EVERY = 3, 30, 20, 8
KILL = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = $1 AND application_name = 'schema-service'"
)


async def test_connection_killed_mid_write_gives_unavailable_and_the_retry_stores_once(migrated_db: str) -> None:
    database = database_of(migrated_db)
    request = pb.WriteMetricsRequest(request_id="killed", metrics=[metric(float(i)) for i in range(5)])
    admin = await asyncpg.connect(migrated_db)
    try:
        async with metrics_server(migrated_db) as running:
            lock = admin.transaction()
            await lock.start()
            await admin.execute("LOCK TABLE metric_write_requests IN EXCLUSIVE MODE")
            pending = asyncio.ensure_future(running.stub.WriteMetrics(request))
            await wait_for_lock_waiters(admin, database, 1)
            assert await admin.fetchval(KILL, database) >= 1
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pending
            await lock.rollback()
            retried = await running.stub.WriteMetrics(request)
    finally:
        await admin.close()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    found = details(caught.value)
    assert found["ErrorInfo"].reason == "DATABASE_UNAVAILABLE"  # type: ignore[attr-defined]
    assert found["RetryInfo"].retry_delay.ToTimedelta() > timedelta(0)  # type: ignore[attr-defined]
    assert (retried.written_count, retried.duplicate) == (5, False)
    assert await count_rows(migrated_db) == 5


class Progress:
    """Acknowledged batches so far, awaitable by the killer."""

    def __init__(self) -> None:
        self.acked = 0
        self.refused = 0
        self.changed = asyncio.Condition()

    async def ack(self) -> None:
        async with self.changed:
            self.acked += 1
            self.changed.notify_all()

    async def reached(self, acked: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.acked >= acked)


async def write_until_acknowledged(
    stub: MetricsServiceStub, request: pb.WriteMetricsRequest, progress: Progress
) -> int:
    """Retry the same batch (same request_id) until the service acknowledges it."""
    while True:
        try:
            response = await stub.WriteMetrics(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            assert "RetryInfo" in details(exc)
            progress.refused += 1
            await asyncio.sleep(0.005)  # a short backoff instead of the advised delay keeps the test fast
            continue
        await progress.ack()
        return int(response.written_count)


async def writer(stub: MetricsServiceStub, number: int, progress: Progress) -> int:
    stored = 0
    for b in range(BATCHES):
        values = [float(number * 100_000 + b * 100 + i) for i in range(BATCH_SIZE)]
        request = pb.WriteMetricsRequest(request_id=f"w{number}-b{b}", metrics=[metric(v) for v in values])
        stored += await write_until_acknowledged(stub, request, progress)
    return stored


@pytest.mark.timeout(120)
async def test_stored_rows_equal_acknowledged_rows_after_connections_are_killed_mid_loop(migrated_db: str) -> None:
    database = database_of(migrated_db)
    progress = Progress()
    admin = await asyncpg.connect(migrated_db)
    try:
        async with metrics_server(migrated_db) as running:

            async def killer() -> int:
                killed = 0
                for threshold in range(KILL_EVERY, WRITERS * BATCHES - KILL_EVERY, KILL_EVERY):
                    await progress.reached(threshold)
                    killed += await admin.fetchval(KILL, database)
                return killed

            killing = asyncio.create_task(killer())
            try:
                acknowledged = sum(await asyncio.gather(*(writer(running.stub, n, progress) for n in range(WRITERS))))
            except BaseException:
                killing.cancel()
                raise
            kills = await killing
        conn_stats = await admin.fetchrow(
            "SELECT count(*) AS rows, count(DISTINCT value) AS distinct_values FROM system_performance_metrics"
        )
        request_ids = await admin.fetchval("SELECT count(*) FROM metric_write_requests")
    finally:
        await admin.close()
    assert kills >= 8, "the test must really cut the service's connections several times"
    assert progress.refused > 0, "some writes must have been in flight when their connection was cut"
    assert acknowledged == WRITERS * BATCHES * BATCH_SIZE
    assert conn_stats["rows"] == acknowledged
    assert conn_stats["distinct_values"] == acknowledged
    assert request_ids == WRITERS * BATCHES


async def test_database_unreachable_then_back_writes_are_refused_then_resume(migrated_db: str) -> None:
    proxy, through_proxy = await TcpProxy.for_database(migrated_db)
    progress = Progress()
    try:
        async with metrics_server(through_proxy) as running:
            await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="before", metrics=[metric(1.0)]))
            await proxy.cut()
            during = pb.WriteMetricsRequest(request_id="during", metrics=[metric(2.0), metric(3.0)])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await running.stub.WriteMetrics(during, timeout=10)
            await proxy.restore()
            # The pool reconnects by itself; the client only retries the same batch.
            assert await write_until_acknowledged(running.stub, during, progress) == 2
    finally:
        await proxy.cut()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert details(caught.value)["RetryInfo"].retry_delay.ToTimedelta() > timedelta(0)  # type: ignore[attr-defined]
    assert await count_rows(migrated_db) == 3
