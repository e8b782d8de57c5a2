"""Test helpers for the metrics service: a real grpc.aio server on 127.0.0.1:0 built like server.py."""

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

from schema_service.api import add_to_server
from schema_service.app import App
from schema_service.config import MetricsSettings, Settings
from schema_service.server import ROLES, SERVICE_NAMES
from schemaservice.v1 import metrics_service_pb2 as pb
from schemaservice.v1 import metrics_service_pb2_grpc
from servicekit.security import Security
from servicekit.server import Lifecycle, ServerOptions, build_server


@dataclass
class Running:
    app: App
    lifecycle: Lifecycle
    server: grpc.aio.Server
    stub: metrics_service_pb2_grpc.MetricsServiceStub
    channel: grpc.aio.Channel


@asynccontextmanager
async def metrics_server(
    dsn: str, *, connect: bool = True, security: Security | None = None, **metrics: Any
) -> AsyncIterator[Running]:
    """The schema service's servicers on a real server; `metrics` overrides MetricsSettings fields; `security`
    (plaintext, e.g. a callers file) turns on authentication with the service's roles."""
    settings = Settings(database_url=dsn, metrics=MetricsSettings(**metrics))
    app = App(settings=settings, dsn=dsn)
    if connect:
        await app.connect()
    lifecycle = Lifecycle(SERVICE_NAMES)
    options = ServerOptions(max_message_bytes=settings.max_message_bytes)
    server = build_server(
        options,
        lifecycle,
        [lambda s: add_to_server(s, app, lifecycle)],
        SERVICE_NAMES,
        security=security,
        roles=ROLES,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Running(app, lifecycle, server, metrics_service_pb2_grpc.MetricsServiceStub(channel), channel)
    finally:
        await channel.close()
        await server.stop(None)
        await app.close()


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
