"""`schema-service serve` applies pending migrations at start, under the lock, before it reports ready."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from schemaservice.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from servicekit.procs import BIN, ServiceProcess
from tests.schema.migration_fixtures.helpers import fetchval, history, write_migrations


@pytest.mark.timeout(60)
async def test_two_replicas_starting_together_apply_each_migration_once(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path,
        {
            "001_log.sql": "CREATE TABLE started_log (n int);\n",
            "002_once.sql": "INSERT INTO started_log VALUES (1);\n",
        },
    )
    args = ("--database-url", empty_db, "--migrations-dir", str(folder))
    with ServiceProcess("schema-service", *args) as first, ServiceProcess("schema-service", *args) as second:
        await asyncio.gather(first.wait_serving("readiness"), second.wait_serving("readiness"))
    assert await history(empty_db) == [(1, True), (2, True)]
    assert await fetchval(empty_db, "SELECT count(*) FROM started_log") == 1


@pytest.mark.timeout(60)
async def test_no_migrate_leaves_the_schema_alone_and_waits_for_it(empty_db: str, tmp_path: Path) -> None:
    """With --no-migrate (a Job migrates) the service is alive but not ready until the schema is."""
    folder = write_migrations(tmp_path, {"001_a.sql": "CREATE TABLE a (x int);\n"})
    args = ("--database-url", empty_db, "--migrations-dir", str(folder), "--no-migrate", "--readiness-interval", "0.1")
    with ServiceProcess("schema-service", *args) as s:
        await s.wait_serving("liveness")
        assert await s.health("readiness") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await fetchval(empty_db, "SELECT to_regclass('a')") is None
        async with grpc.aio.insecure_channel(s.address) as channel:
            stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListAnomalies(metrics_service_pb2.ListAnomaliesRequest())
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        migrated = subprocess.run(
            [str(BIN / "schema-service"), "migrate", "--database-url", empty_db, "--migrations-dir", str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert migrated.returncode == 0, migrated.stderr
        await s.wait_serving("readiness")
