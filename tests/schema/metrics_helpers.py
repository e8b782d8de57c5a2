"""Test helpers for the metrics service: the schema service on 127.0.0.1:0, started as `serve` starts it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
from google.protobuf import message as pb_message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from schema_service import server
from schema_service.app import App
from schema_service.config import MetricsSettings, MigrationSettings
from schemaservice.v1 import metrics_service_pb2 as pb
from schemaservice.v1 import metrics_service_pb2_grpc
from servicekit.security import Security
from servicekit.server import Lifecycle
from tests.schemaserver import schema_server, settings_for


@dataclass
class Served:
    running: server.Running
    stub: metrics_service_pb2_grpc.MetricsServiceStub
    channel: grpc.aio.Channel

    @property
    def app(self) -> App:
        return self.running.app

    @property
    def lifecycle(self) -> Lifecycle:
        return self.running.lifecycle


@asynccontextmanager
async def metrics_server(
    dsn: str,
    *,
    ready: bool = True,
    migration: MigrationSettings | None = None,
    security: Security | None = None,
    **metrics: Any,
) -> AsyncIterator[Served]:
    """The schema service as `serve` starts it (tests/schemaserver.py); `metrics` overrides MetricsSettings fields;
    `security` (plaintext, e.g. a callers file) turns on authentication with the service's roles."""
    settings = settings_for(dsn, migration=migration, security=security, metrics=MetricsSettings(**metrics))
    async with schema_server(settings, ready=ready) as running:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Served(running, metrics_service_pb2_grpc.MetricsServiceStub(channel), channel)


def metric(
    value: float = 1.0,
    *,
    name: str = "llm.latency_ms",
    at: datetime | None = None,
    labels: Mapping[str, str] | None = None,
    unit: str = "ms",
    metadata: Mapping[str, Any] | None = None,
) -> pb.Metric:
    m = pb.Metric(name=name, value=value, unit=unit, labels=dict(labels or {"provider": "openai"}))
    m.time.FromDatetime(at or datetime.now(UTC))
    if metadata is not None:
        m.metadata.update(dict(metadata))
    return m


def details(error: grpc.aio.AioRpcError) -> dict[str, pb_message.Message]:
    """The google.rpc details of a failed call, by type name (ErrorInfo, BadRequest, RetryInfo...)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    assert status.code == error.code().value[0]
    return status_details(status)


def status_details(status: status_pb2.Status) -> dict[str, pb_message.Message]:
    """The google.rpc details packed in a status, by type name."""
    found: dict[str, pb_message.Message] = {}
    for packed in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                found[kind.DESCRIPTOR.name] = detail
    return found


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    bad = details(error)["BadRequest"]
    return {v.field: v.description for v in bad.field_violations}  # type: ignore[attr-defined]


async def count_rows(dsn: str, table: str = "system_performance_metrics") -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
        return count
    finally:
        await conn.close()


async def wait_for_lock_waiters(admin: asyncpg.Connection, database: str, count: int) -> None:
    """Until `count` service backends wait on a lock (polled: PostgreSQL offers nothing to await)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'schema-service' "
        "AND wait_event_type = 'Lock'"
    )
    while True:
        # `admin` may be inside the transaction holding the lock, where pg_stat_activity would keep
        # showing the snapshot it took first: clear it on every poll.
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        if await admin.fetchval(query, database) >= count:
            return
        await asyncio.sleep(0.01)
