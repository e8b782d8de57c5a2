"""The schema service as `prepare`/`start` build it (schema_service/server.py), the code `serve` runs: the
schema gate, readiness following the migrations, and a Running whose `async with` stops and closes everything."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schema_service.config import MigrationSettings
from schema_service.migrate import apply_migrations
from schemaservice.v1 import metrics_service_pb2 as pb
from schemaservice.v1 import metrics_service_pb2_grpc
from tests.schema.metrics_helpers import details, metric
from tests.schemaserver import schema_server, settings_for, wait_for_readiness

pytestmark = pytest.mark.timeout(60)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_calls_wait_behind_the_schema_gate_until_readiness_finds_the_schema_migrated(empty_db: str) -> None:
    # As `serve --no-migrate` while the migration Job has not run yet.
    no_migrate = MigrationSettings(migrate_on_start=False)
    settings = settings_for(empty_db, migration=no_migrate, readiness_interval_s=0.05)
    async with schema_server(settings, ready=False) as running:
        await running.app.connect()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
            request = pb.WriteMetricsRequest(request_id="gated", metrics=[metric()])
            with pytest.raises(grpc.aio.AioRpcError) as gated:
                await stub.WriteMetrics(request, timeout=10)
            check = health_pb2.HealthCheckRequest(service="readiness")
            before = await health_pb2_grpc.HealthStub(channel).Check(check, timeout=5)

            await apply_migrations(empty_db)
            await wait_for_readiness(channel, SERVING)
            written = await stub.WriteMetrics(request, timeout=10)

    assert gated.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "schema not migrated yet" in (gated.value.details() or "")
    found = details(gated.value)
    assert found["ErrorInfo"].reason == "DATABASE_UNAVAILABLE"  # type: ignore[attr-defined]
    assert found["RetryInfo"].retry_delay.ToTimedelta() > timedelta(0)  # type: ignore[attr-defined]
    assert before.status == NOT_SERVING
    assert written.written_count == 1


async def test_leaving_async_with_stops_the_server_and_closes_the_pool_and_background(migrated_db: str) -> None:
    async with schema_server(settings_for(migrated_db)) as running:
        address = f"127.0.0.1:{running.port}"
        async with grpc.aio.insecure_channel(address) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        pool = running.app.pool
    assert answer.status == SERVING
    assert pool is not None and pool.is_closing()
    assert all(task.done() for task in running.background.tasks)
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert gone.value.code() == grpc.StatusCode.UNAVAILABLE
