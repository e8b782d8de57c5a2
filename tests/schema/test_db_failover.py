"""The database fails over: a primary and a synchronous standby from the embedded PostgreSQL binaries, the
service on a multi-host URL, the primary killed and the standby promoted while WriteMetrics goes on.

Acknowledged rows are all there afterwards, none twice; a read-only server is a retryable UNAVAILABLE;
readiness wants a server that accepts writes; the outage is logged once when it starts and once at its end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2

from schema_service import database
from schema_service.config import MigrationSettings
from schema_service.migrate import apply_migrations
from schemaservice.v1 import metrics_service_pb2 as pb
from schemaservice.v1.metrics_service_pb2_grpc import MetricsServiceStub
from tests.pgcluster import Cluster, primary_and_standby
from tests.schema.metrics_helpers import details, metric, metrics_server
from tests.schema.migration_fixtures.helpers import fetchval, write_migrations
from tests.schema.test_metrics_connection_loss import BATCH_SIZE, BATCHES, WRITERS, Progress, writer
from tests.schemaserver import schema_server, settings_for, wait_for_readiness

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    async with primary_and_standby() as running:
        await apply_migrations(running.primary.dsn)
        yield running


async def _stored(dsn: str) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow(
            "SELECT (SELECT count(*) FROM system_performance_metrics) AS rows, "
            "(SELECT count(DISTINCT value) FROM system_performance_metrics) AS distinct_values, "
            "(SELECT count(*) FROM metric_write_requests) AS requests"
        )
    finally:
        await conn.close()


@pytest.mark.timeout(120)
async def test_a_standby_is_a_retryable_unavailable_and_not_ready(cluster: Cluster) -> None:
    # target_session_attrs=any: the pool takes whatever server answers, as it did before the fix.
    standby = cluster.standby.dsn + "?target_session_attrs=any"
    async with metrics_server(standby, ready=False, migration=MigrationSettings(migrate_on_start=False)) as running:
        # As after a demotion: the service was ready on a primary, then the server became a standby. (Readiness
        # itself never becomes ready on a standby: the schema gate would refuse the write first.)
        await running.app.connect()
        running.app.ready.set()
        request = pb.WriteMetricsRequest(request_id="on-standby", metrics=[metric(1.0)])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.WriteMetrics(request, timeout=10)
        assert running.app.pool is not None
        assert await database.check(running.app.pool) == "the server is read-only (a standby in recovery)"

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    found = details(caught.value)
    assert found["ErrorInfo"].reason == "DATABASE_UNAVAILABLE"  # type: ignore[attr-defined]
    assert found["ErrorInfo"].metadata["sqlstate"] == "25006"  # type: ignore[attr-defined]
    assert found["RetryInfo"].retry_delay.ToTimedelta() > timedelta(0)  # type: ignore[attr-defined]


async def test_migrations_go_to_the_primary_of_a_multi_host_url(cluster: Cluster, tmp_path: Path) -> None:
    standby_first = f"postgresql://postgres@127.0.0.1:{cluster.standby.port},127.0.0.1:{cluster.primary.port}/postgres"
    folder = write_migrations(tmp_path, {"900_probe.sql": "CREATE TABLE failover_probe (id int);\n"})

    await apply_migrations(standby_first, folder)

    assert await fetchval(cluster.primary.dsn, "SELECT to_regclass('failover_probe') IS NOT NULL")


@pytest.mark.timeout(180)
async def test_promoting_the_standby_during_writes_loses_and_doubles_nothing(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    progress = Progress()
    caplog.set_level(logging.INFO, logger="schema_service.database")
    # The service's own readiness watches the database (and logs the outage), as in production.
    settings = settings_for(cluster.dsn, readiness_interval_s=0.05)
    async with schema_server(settings) as running, grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = MetricsServiceStub(channel)
        writers = asyncio.gather(*(writer(stub, n, progress) for n in range(WRITERS)))
        await progress.reached(WRITERS * 3)
        refused_before = progress.refused
        await cluster.kill_primary()
        # Promoted only once readiness has seen the outage: a promotion that beats the next check (a busy machine
        # delays the loop) would leave nothing for the log lines below to report.
        await asyncio.wait_for(wait_for_readiness(channel, NOT_SERVING), 30)
        await cluster.promote_standby()
        acknowledged = sum(await writers)
        await asyncio.wait_for(wait_for_readiness(channel, SERVING), 30)

    stored = await _stored(cluster.standby.dsn)
    assert acknowledged == WRITERS * BATCHES * BATCH_SIZE
    assert (stored["rows"], stored["distinct_values"]) == (acknowledged, acknowledged), "lost or doubled rows"
    assert stored["requests"] == WRITERS * BATCHES
    assert progress.refused > refused_before, "writes must have met the outage"
    lines = [r.getMessage() for r in caplog.records if r.name == "schema_service.database"]
    assert lines.count("database unavailable") == 1, lines
    assert lines.count("database available again") == 1, lines
    back = next(r for r in caplog.records if r.getMessage() == "database available again")
    assert back.down_s > 0 and str(cluster.standby.port) in back.hosts  # type: ignore[attr-defined]
