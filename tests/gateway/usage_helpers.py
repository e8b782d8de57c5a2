"""A gateway whose usage records go to the real schema service, chats run through it, and what the ledger holds:
for the usage feed and loss tests (tests/gateway/test_usage_*.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc

from gateway_service import server
from gateway_service.config import GatewayConfig, ServeSettings, UsageFeedSettings
from gateway_service.usage import UsageFeed
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from servicekit.security import Security
from tests.gateway.e2e_helpers import Upstream, gateway_config, user

# Batches leave at once and failed ones are tried again within tenths of a second: the faults under test
# last a second or two, and the outcome does not depend on timing.
FAST_USAGE = UsageFeedSettings(batch_size=100, flush_interval_s=0.02, retry_initial_s=0.05, retry_max_s=0.2)
# The first provider fails every FAIL_EVERY-th chat (a 500), which fails over to the second: failed attempts are
# attempts made, and are in the ledger too. The breaker never opens on them (it would skip, not fail).
FAIL_EVERY = 10
# Health is not under test: on a loaded machine a slow first token would mark a provider a suspected stall
# (4 x its usual time to first token) and skip it, failing a chat the loss tests count on.
NEVER_UNHEALTHY = {"breaker_failures": 1_000_000, "breaker_error_rate": 1.0, "stall_floor_s": 60.0}
UPSTREAMS = [
    Upstream("first", "anthropic", "m-first", patient=True),
    Upstream("second", "openai", "m-second", patient=True),
]


def usage_config(
    sim: SimulatorHandle, address: str, upstreams: Sequence[Upstream] = UPSTREAMS, **usage: Any
) -> GatewayConfig:
    cfg = gateway_config(
        sim.base_url,
        upstreams,
        env={"SIM_KEY": "sk-sim", "SCHEMA_SERVICE_ADDR": address},
        **NEVER_UNHEALTHY,
    )
    return cfg.model_copy(update={"usage": FAST_USAGE.model_copy(update=usage), "schema_service": address})


def prompt(index: int) -> str:
    fault = "[[fault:500 api=anthropic]] " if index % FAIL_EVERY == 0 else ""
    return f"{fault}[[reply:ok {index}]]"


@dataclass
class Chats:
    """The chats run so far: each one's request id and attempts made (from its ChatResponse)."""

    attempts: dict[str, int] = field(default_factory=dict)
    done: int = 0
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def attempts_made(self) -> int:
        return sum(self.attempts.values())

    async def reached(self, count: int) -> None:
        async with self.progress:
            await self.progress.wait_for(lambda: self.done >= count)


@dataclass
class UsageGateway:
    running: server.Running
    chat: chat_service_pb2_grpc.ChatServiceStub

    @property
    def feed(self) -> UsageFeed:
        assert self.running.gateway.usage is not None
        return self.running.gateway.usage

    async def run_chats(self, count: int, chats: Chats, concurrency: int = 16) -> None:
        """`count` chats, `concurrency` at a time, each recorded in `chats` as it answers."""
        indexes = iter(range(count))

        async def worker() -> None:
            for index in indexes:
                request = pb.ChatRequest(model="default", messages=user(prompt(index)), request_id=f"chat-{index}")
                response = await self.chat.Chat(request, timeout=30)
                async with chats.progress:
                    chats.attempts[response.request_id] = len(response.attempts)
                    chats.done += 1
                    chats.progress.notify_all()

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def delivered(self, count: int) -> None:
        """Until the feed has had `count` records acknowledged by the schema service."""
        await self.feed.sender.until(lambda: self.feed.sender.sent >= count)


@contextlib.asynccontextmanager
async def usage_gateway(
    sim: SimulatorHandle,
    address: str,
    upstreams: Sequence[Upstream] = UPSTREAMS,
    cfg: GatewayConfig | None = None,
    **usage: Any,
) -> AsyncIterator[UsageGateway]:
    """A started gateway reporting to `address` (its config `cfg`, else `usage_config`'s) and a stub to it."""
    sim.simulator.clear()
    settings = ServeSettings(host="127.0.0.1", port=0, security=Security(insecure_dev=True))
    running = await server.start(cfg or usage_config(sim, address, upstreams, **usage), settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield UsageGateway(running, chat_service_pb2_grpc.ChatServiceStub(channel))
    finally:
        await running.server.stop(0)
        await running.close()


async def ledger_rows(dsn: str, query: str = "SELECT * FROM usage_ledger ORDER BY request_id, attempt") -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def ledger_counts(dsn: str) -> tuple[int, int]:
    """(rows, rows beyond the first of one request id and attempt): what arrived, and doubles."""
    (row,) = await ledger_rows(
        dsn, "SELECT count(*) AS n, count(*) - count(DISTINCT (request_id, attempt)) AS doubles FROM usage_ledger"
    )
    return int(row["n"]), int(row["doubles"])


async def within(seconds: float, awaitable: Awaitable[None]) -> None:
    await asyncio.wait_for(awaitable, seconds)
