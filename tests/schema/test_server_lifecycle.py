"""The schema service as a process: health names, readiness following the database, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import re

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from servicekit.procs import ServiceProcess
from tests.pg import database_of
from tests.schema.metrics_helpers import details
from tests.tcpproxy import TcpProxy

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.timeout(90)
async def test_readiness_follows_database_while_liveness_stays_serving(migrated_db: str) -> None:
    proxy, through_proxy = await TcpProxy.for_database(migrated_db)
    args = ("--database-url", through_proxy, "--no-migrate", "--readiness-interval", "0.1")
    with ServiceProcess("schema-service", *args) as service:
        await service.wait_serving("readiness")
        for name in ("", "liveness", "schemaservice.v1.MigrationService", "schemaservice.v1.MetricsService"):
            assert await service.health(name) == SERVING

        await proxy.cut()
        await service.wait_for("readiness", NOT_SERVING, timeout_s=20)
        assert await service.health("") == NOT_SERVING
        assert await service.health("liveness") == SERVING

        await proxy.restore()
        await service.wait_serving("readiness", timeout_s=20)
        assert await service.health("liveness") == SERVING
    await proxy.cut()


@pytest.mark.timeout(90)
async def test_sigterm_flips_health_refuses_new_calls_and_exits_zero(migrated_db: str) -> None:
    # Trust auth ignores the password, so the URL can carry one that must never be logged.
    with_password = re.sub(r"//([^:@/]+)(:[^@]*)?@", r"//\1:s3cret-pw@", migrated_db, count=1)
    assert "s3cret-pw" in with_password
    args = ("--database-url", with_password, "--no-migrate", "--shutdown-grace", "60")
    with ServiceProcess("schema-service", *args) as service:
        await service.wait_serving("readiness")
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="readiness"))
            first = await watch.read()
            assert first.status == SERVING
            service.terminate()
            # The watcher sees the flip before the server goes away.
            flipped = await watch.read()
            assert flipped.status == NOT_SERVING
            # Long-lived watch streams end at once instead of holding the 60 s drain.
            assert await watch.read() == grpc.aio.EOF
            assert await watch.code() == grpc.StatusCode.OK
            assert await service.wait_exit(timeout_s=20) == 0
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await service.health("liveness")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        lines = [json.loads(line) for line in service.output().splitlines()]
        assert {"shutting down", "stopped"} <= {line["message"] for line in lines}
        assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
        assert "s3cret-pw" not in service.output()


@pytest.mark.timeout(60)
async def test_message_over_the_transport_limit_gets_a_clear_error(migrated_db: str) -> None:
    from schemaservice.v1 import metrics_service_pb2, metrics_service_pb2_grpc

    args = ("--database-url", migrated_db, "--no-migrate", "--max-message-bytes", str(17 * 1024 * 1024))
    with ServiceProcess("schema-service", *args) as service:
        await service.wait_serving("readiness")
        metric = metrics_service_pb2.Metric(name="x", value=1.0, unit="ms", labels={"pad": "p" * (18 * 1024 * 1024)})
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.WriteMetrics(metrics_service_pb2.WriteMetricsRequest(request_id="r", metrics=[metric]))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in (refused.value.details() or "")


@pytest.mark.timeout(90)
async def test_sigterm_drains_an_inflight_write_while_refusing_new_calls(migrated_db: str) -> None:
    from schemaservice.v1 import metrics_service_pb2, metrics_service_pb2_grpc
    from tests.schema.metrics_helpers import metric, wait_for_lock_waiters

    args = ("--database-url", migrated_db, "--no-migrate", "--shutdown-grace", "60")
    admin = await asyncpg.connect(migrated_db)
    try:
        with ServiceProcess("schema-service", *args) as service:
            await service.wait_serving("readiness")
            # The test holds a lock the write needs, so the write is in flight when SIGTERM arrives.
            holding = admin.transaction()
            await holding.start()
            await admin.execute("LOCK TABLE metric_write_requests IN EXCLUSIVE MODE")
            async with grpc.aio.insecure_channel(service.address) as channel:
                stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
                request = metrics_service_pb2.WriteMetricsRequest(request_id="in-flight", metrics=[metric(1.0)])
                pending = asyncio.ensure_future(stub.WriteMetrics(request, timeout=60))
                await wait_for_lock_waiters(admin, database_of(migrated_db), 1)
                service.terminate()
                await _until_new_calls_are_refused(health_pb2_grpc.HealthStub(channel))
                assert service.proc.poll() is None, "still draining the in-flight write"
                await holding.rollback()
                assert (await pending).written_count == 1
            assert await service.wait_exit(timeout_s=30) == 0
    finally:
        await admin.close()


async def _until_new_calls_are_refused(stub: health_pb2_grpc.HealthStub) -> None:
    """New calls from a connected client fail with UNAVAILABLE (retryable elsewhere) once the drain starts."""
    while True:
        try:
            await stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=0.5)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (exc.details() or "")
            # The same reason as the streams and waiters the service itself ends at shutdown.
            assert details(exc)["ErrorInfo"].reason == "SERVER_SHUTTING_DOWN"  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.02)
