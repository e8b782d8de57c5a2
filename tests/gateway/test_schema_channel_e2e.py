"""The gateway's metrics reach a schema service served with TLS and a callers file, over TLS with the
gateway's own token (the wiring of the Kubernetes base), and are refused without the role to write."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from gateway_service import server
from gateway_service.config import ServeSettings, TelemetrySettings
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from schemaservice.v1 import metrics_service_pb2 as mpb
from schemaservice.v1 import metrics_service_pb2_grpc
from servicekit.security import Security
from tests.gateway.e2e_helpers import Upstream, gateway_config, user
from tests.schemaserver import schema_server, settings_for
from tests.servicekit.certs import Authority

pytestmark = pytest.mark.timeout(60)


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@asynccontextmanager
async def tls_schema_service(dsn: str, folder: Path) -> AsyncIterator[tuple[str, Path]]:
    """The real schema service's servicers behind TLS and callers; its address and its CA file."""
    ca = Authority()
    cert, key = ca.issue("schema-service", server=True).write(folder, "schema")
    callers = folder / "callers.yaml"
    callers.write_text(
        "callers:\n"
        f'  - {{name: gateway, token_sha256: "{sha256("gw-token")}", roles: [metrics.write, usage.write]}}\n'
        f'  - {{name: reader, token_sha256: "{sha256("read-token")}", roles: [metrics.read, metrics.read_all]}}\n'
        "...\n"
    )
    security = Security(tls_cert=cert, tls_key=key, callers=callers)
    async with schema_server(settings_for(dsn, security=security)) as running:
        yield f"127.0.0.1:{running.port}", ca.write(folder / "ca.crt")


async def chat_and_flush(sim: SimulatorHandle, address: str, ca: Path, token_file: Path) -> tuple[int, int]:
    """One chat through an in-process gateway reporting to `address`; (metrics sent, metrics dropped)."""
    cfg = gateway_config(
        sim.base_url,
        [Upstream("p", "openai", "m", patient=True)],
        env={"SIM_KEY": "sk-sim", "SCHEMA_SERVICE_ADDR": address},
    )
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        security=Security(insecure_dev=True),
        schema_service_ca=ca,
        schema_service_token_file=token_file,
    )
    running = await server.start(cfg, settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            chat = chat_service_pb2_grpc.ChatServiceStub(channel)
            await chat.Chat(pb.ChatRequest(model="default", messages=user("[[reply:ok]]")), timeout=10)
        telemetry = running.gateway.telemetry
        await telemetry.flush()
        return telemetry.sent, telemetry.dropped
    finally:
        await running.server.stop(0)
        await running.close()


async def test_metrics_travel_over_tls_with_the_gateways_token(
    sim: SimulatorHandle, migrated_db: str, tmp_path: Path
) -> None:
    async with tls_schema_service(migrated_db, tmp_path) as (address, ca):
        token = tmp_path / "token"
        token.write_text("gw-token\n")
        sent, dropped = await chat_and_flush(sim, address, ca, token)
        assert sent > 0 and dropped == 0
        # What was sent is stored as the gateway's: a caller with metrics.read_all finds it there.
        query = mpb.QueryMetricsRequest(name="llm.attempt.duration", aggregates=[mpb.AGGREGATE_COUNT], caller="gateway")
        query.start_time.FromSeconds(0)
        query.end_time.FromSeconds(int(time.time()) + 60)
        async with grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca.read_bytes())) as channel:
            answer = await metrics_service_pb2_grpc.MetricsServiceStub(channel).QueryMetrics(
                query, metadata=(("authorization", "Bearer read-token"),), timeout=10
            )
        assert sum(b.count for b in answer.buckets) == 1


async def test_a_token_without_metrics_write_is_logged_as_refused_and_its_metrics_wait(
    sim: SimulatorHandle, migrated_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_schema_service(migrated_db, tmp_path) as (address, ca):
        token = tmp_path / "token"
        token.write_text("read-token")
        cfg = gateway_config(
            sim.base_url,
            [Upstream("p", "openai", "m", patient=True)],
            env={"SIM_KEY": "sk-sim", "SCHEMA_SERVICE_ADDR": address},
        )
        cfg = cfg.model_copy(update={"telemetry": TelemetrySettings(flush_interval_s=0.05, shutdown_flush_s=0)})
        settings = ServeSettings(
            host="127.0.0.1",
            port=0,
            security=Security(insecure_dev=True),
            schema_service_ca=ca,
            schema_service_token_file=token,
        )
        running = await server.start(cfg, settings)
        sender = running.gateway.telemetry.sender
        try:
            with caplog.at_level(logging.WARNING, logger="gateway_service.sender"):
                async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                    chat = chat_service_pb2_grpc.ChatServiceStub(channel)
                    await chat.Chat(pb.ChatRequest(model="default", messages=user("[[reply:ok]]")), timeout=10)
                await asyncio.wait_for(sender.until(lambda: sender.failures["PERMISSION_DENIED"] > 0), 10)
            # Refused, said so with its code, and kept for a retry (a rotated token would get it through).
            assert sender.sent == 0 and sender.waiting > 0 and not sender.dropped
            (line,) = [r for r in caplog.records if r.getMessage().startswith("metrics refused")]
            assert line.getMessage() == "metrics refused by the schema service; retrying"
            assert line.code == "PERMISSION_DENIED"  # type: ignore[attr-defined]
            assert not [r for r in caplog.records if "full" in r.getMessage()]
        finally:
            await running.server.stop(0)
            await running.close()
        assert sender.dropped == {"shutdown": sender.dropped["shutdown"]} and sender.dropped["shutdown"] > 0
