"""A gateway reporting to the real schema service (started, and restarted on its port, by tests/schemaserver.py's
RestartableSchemaServer), and what PostgreSQL stored: for the telemetry outage, usage and rotation tests."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc

from gateway_service import server
from gateway_service.config import GatewayConfig, ServeSettings, TelemetrySettings, UsageFeedSettings
from gateway_service.sender import BufferedSender
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from schemaservice.v1 import metrics_service_pb2 as mpb
from servicekit.security import Security
from tests.gateway.e2e_helpers import Upstream, gateway_config, user

METRICS_PER_CHAT = 5  # one successful attempt: duration, ttft, input and output tokens, cost
# Batches leave at once and failed ones are tried again within tenths of a second: the faults under test
# are seconds long at most, and the outcome does not depend on timing.
FAST_TELEMETRY = TelemetrySettings(
    batch_size=10, flush_interval_s=0.02, retry_initial_s=0.05, retry_max_s=0.2, shutdown_flush_s=0
)
# The usage records of the same chats likewise: with the default backoff (to 30 s) a batch refused during a
# rotation was still waiting out its backoff when the test ended, and under load the shutdown flush dropped it.
FAST_USAGE = UsageFeedSettings(flush_interval_s=0.02, retry_initial_s=0.05, retry_max_s=0.2)


@dataclass
class Reporting:
    """A gateway whose metrics go to the schema service; `chats(n)` runs n chats through it."""

    running: server.Running
    chat: chat_service_pb2_grpc.ChatServiceStub

    @property
    def sender(self) -> BufferedSender[mpb.Metric]:
        return self.running.gateway.telemetry.sender

    async def chats(self, count: int) -> None:
        for _ in range(count):
            await self.chat.Chat(pb.ChatRequest(model="default", messages=user("[[reply:ok]]")), timeout=10)

    async def until(self, holds: Callable[[BufferedSender[mpb.Metric]], bool]) -> None:
        await self.sender.until(lambda: holds(self.sender))

    async def usage_settled(self) -> None:
        """Returns once every usage record so far was delivered or dropped."""
        assert self.running.gateway.usage is not None
        await self.running.gateway.usage.sender.settled()


def reporting_config(sim: SimulatorHandle, address: str) -> GatewayConfig:
    cfg = gateway_config(
        sim.base_url,
        [Upstream("p", "openai", "m", patient=True)],
        env={"SIM_KEY": "sk-sim", "SCHEMA_SERVICE_ADDR": address},
    )
    return cfg.model_copy(update={"telemetry": FAST_TELEMETRY, "usage": FAST_USAGE})


async def with_reporting(
    sim: SimulatorHandle, address: str, body: Callable[[Reporting], Awaitable[None]], **schema_client: Path
) -> None:
    """Run `body` against a started gateway reporting to `address` (schema_client: ServeSettings' schema_service_*)."""
    sim.simulator.clear()
    settings = ServeSettings(host="127.0.0.1", port=0, security=Security(insecure_dev=True), **schema_client)
    running = await server.start(reporting_config(sim, address), settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await body(Reporting(running, chat_service_pb2_grpc.ChatServiceStub(channel)))
    finally:
        await running.server.stop(0)
        await running.close()


async def stored(dsn: str) -> tuple[int, int]:
    """(rows of llm.attempt.* metrics, rows beyond the first of identical ones): what arrived, and doubles."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetchval(
            "SELECT count(*) FROM system_performance_metrics m JOIN metric_series s USING (series_id)"
            " WHERE s.name LIKE 'llm.attempt.%'"
        )
        doubles = await conn.fetchval(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM system_performance_metrics"
            " GROUP BY series_id, time, value) AS same"
        )
    finally:
        await conn.close()
    return int(rows), int(doubles)


def replace(path: Path, data: bytes) -> None:
    """Write `path` anew in one step, as Kubernetes swaps a mounted Secret (never half-written)."""
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_bytes(data)
    os.replace(fresh, path)
