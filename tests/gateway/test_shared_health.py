"""Health shared across replicas (`health.backend: redis`): two real `gateway-service serve` processes, one Redis,
the simulator over HTTP. A 429 one sees makes the other skip that provider; of the two, only one probes a
half-open provider; with Redis gone both serve from their own memory, and say so once, then once again when
it is back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway_service.config import parse
from gateway_service.errors import ConfigError
from llm_simulator import SimulatorHandle
from llm_simulator.ratelimit import parse_limit
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc, provider_service_pb2_grpc
from llmgateway.v1 import provider_service_pb2 as ppb
from servicekit.procs import ServiceProcess, free_port
from tests.gateway.e2e_helpers import Upstream, user
from tests.redisserver import redis_url

pytestmark = pytest.mark.timeout(120)

DEADLINE_S = 30.0  # for a condition that holds within a second on an idle machine
A = Upstream("a", "openai", "ma", patient=True)
B = Upstream("b", "openai", "mb", patient=True)
DOWN_LINE = "provider health: Redis unreachable"
BACK_LINE = "provider health: shared through Redis again"


@dataclass
class Replica:
    proc: ServiceProcess
    metrics_port: int
    chat: chat_service_pb2_grpc.ChatServiceStub
    providers: provider_service_pb2_grpc.ProviderServiceStub

    async def ask(self, text: str = "hi") -> pb.ChatResponse:
        response: pb.ChatResponse = await self.chat.Chat(
            pb.ChatRequest(model="default", messages=user(text)), timeout=15
        )
        return response

    async def state(self, provider: str) -> int:
        response = await self.providers.ListProviders(ppb.ListProvidersRequest(), timeout=5)
        return next(p.health for p in response.providers if p.name == provider)

    async def shared(self) -> float | None:
        text = await asyncio.to_thread(_scrape, self.metrics_port)
        for family in text_string_to_metric_families(text):
            if family.name == "llm_gateway_health_shared":
                return next((float(s.value) for s in family.samples if s.labels == {"backend": "redis"}), None)
        return None  # not yet: before the first connect (or its failure) the gauge has no sample

    async def requests_left(self, provider: str, model: str) -> int | None:
        """What this replica thinks `model` has left of its requests (its provider's headers), None: nothing known."""
        response = await self.providers.ListProviders(ppb.ListProvidersRequest(), timeout=5)
        [spec] = [p for p in response.providers if p.name == provider]
        [view] = [m for m in spec.models if m.name == model]
        return next((h.remaining for h in view.headroom if h.limit == "requests"), None)

    def lines(self, text: str) -> int:
        return self.proc.output().count(text)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def until(holds: Callable[[], Awaitable[bool]], what: str) -> float:
    """Wait for `holds` (another process's doing); the seconds it took. Fails at DEADLINE_S."""
    start = time.monotonic()
    while not await holds():
        assert time.monotonic() - start < DEADLINE_S, what
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def config_yaml(sim: SimulatorHandle, path: Path, url: str, **failover: float) -> Path:
    data: dict[str, Any] = {
        "providers": [A.entry(sim.base_url), B.entry(sim.base_url)],
        "routes": {"default": ["a/ma", "b/mb"]},
        "failover": {"min_attempt_budget_s": 0.01, "stall_floor_s": 60.0, **failover},
        "routing": {"slow_start_window_s": 0},  # a closed breaker sends all back at once: its close is under test
        "health": {"backend": "redis"},
        # A loaded test machine answers Redis in more than the default 50 ms at times; that is not under test.
        "limits": {"redis_url": url, "key_prefix": f"test-health-{uuid.uuid4().hex[:8]}", "redis_timeout_ms": 2000,
                   "redis_retry_s": 0.2},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.asynccontextmanager
async def replica(config: Path) -> AsyncIterator[Replica]:
    """One `gateway-service serve` process for `config`, once its health is shared through Redis."""
    env = {**os.environ, "SIM_KEY": "sk-sim-key-1234"}
    port = free_port()
    with ServiceProcess("gateway-service", "--config", str(config), "--metrics-port", str(port), env=env) as proc:
        await proc.wait_serving()
        async with grpc.aio.insecure_channel(proc.address) as channel:
            made = Replica(
                proc,
                port,
                chat_service_pb2_grpc.ChatServiceStub(channel),
                provider_service_pb2_grpc.ProviderServiceStub(channel),
            )
            await until(lambda: _is(made.shared(), 1.0), "health shared through Redis")
            yield made


@contextlib.asynccontextmanager
async def replicas(config: Path) -> AsyncIterator[tuple[Replica, Replica]]:
    async with replica(config) as one, replica(config) as two:
        yield one, two


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


def models_asked(sim: SimulatorHandle) -> list[str]:
    return [o.model for o in sim.simulator.observations]


async def test_a_429_one_replica_sees_makes_the_other_skip_that_provider(sim: SimulatorHandle, tmp_path: Path) -> None:
    # Headers off: a 429's retry-after also leaves a no headroom (shared too, and named first); the cooldown's own
    # sharing is under test here.
    config = config_yaml(sim, tmp_path / "gateway.yaml", redis_url(), rate_limit_headers=False)
    async with replicas(config) as (one, two):
        sim.simulator.clear()
        first = await one.ask("hi [[fault:429 retry_after=30 model=ma]]")
        assert (first.provider, models_asked(sim)) == ("b", ["ma", "mb"])
        seen_s = await until(lambda: _is(two.state("a"), ppb.HEALTH_STATE_COOLING_DOWN), "the cooldown on two")
        second = await two.ask("hi")
        assert second.provider == "b"
        [skipped] = second.skipped
        assert (skipped.provider, skipped.model, skipped.reason) == ("a", "ma", pb.FAILURE_REASON_UNHEALTHY)
        assert re.fullmatch(r"cooling down for \d+\.\d{3}s after rate_limited", skipped.message), skipped.message
        assert 25.0 < float(skipped.message.split()[3][:-1]) <= 30.0  # the same end as one's, not a fresh 30 s
        assert models_asked(sim) == ["ma", "mb", "mb"]  # zero requests to a from two
        async with replica(config) as late:  # started after the 429: it reads the cooldown's key
            assert await late.state("a") == ppb.HEALTH_STATE_COOLING_DOWN
            assert (await late.ask()).skipped[0].message.endswith("after rate_limited")
        assert models_asked(sim) == ["ma", "mb", "mb", "mb"]
    print(f"two saw one's cooldown {seen_s * 1000:.0f} ms after one's chat returned")


async def test_only_one_of_two_replicas_probes_a_half_open_provider(sim: SimulatorHandle, tmp_path: Path) -> None:
    # One failure opens a's breaker for 1 s; the probe then waits 5 s for a first token and times out at 3 s.
    config = config_yaml(sim, tmp_path / "gateway.yaml", redis_url(), breaker_failures=1, breaker_open_s=1.0)
    async with replicas(config) as (one, two):
        sim.simulator.clear()
        sim.simulator.push_fault("500 model=ma")
        assert (await one.ask()).provider == "b"
        opened_s = await until(lambda: _is(two.state("a"), ppb.HEALTH_STATE_UNHEALTHY), "the open breaker on two")
        print(f"two saw one's breaker open {opened_s * 1000:.0f} ms after one's chat returned")
        sim.simulator.push_fault("slow ms=5000 model=ma")
        prober = await half_open(one, two)
        other = two if prober is one else one
        answers = await asyncio.gather(*(r.ask() for r in (prober, other) for _ in range(4)))
        assert [a.provider for a in answers].count("a") == 0  # the probe timed out and failed over too
        assert models_asked(sim).count("ma") == 2  # the first failure, then the one probe of both replicas
        others = [s.message for a in answers[4:] for s in a.skipped]
        assert others and all("probe running on another replica" in m for m in others), others
        # The next half-open probe succeeds: the breaker closes on both, and two's next chat goes to a again.
        prober = await half_open(one, two)
        assert (await prober.ask()).provider == "a"
        other = two if prober is one else one
        await until(lambda: _not(other.state("a"), ppb.HEALTH_STATE_UNHEALTHY), "the close on the other replica")
        assert (await other.ask()).provider == "a"
    assert models_asked(sim).count("ma") == 4


async def test_what_a_providers_headers_told_one_replica_the_other_counts_too(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """a allows 3 requests a minute and says so in its x-ratelimit-* headers: chats alternating between the two
    replicas send it exactly 3 and get no 429 (each alone would think it had room for a 4th)."""
    async with replicas(config_yaml(sim, tmp_path / "gateway.yaml", redis_url())) as (one, two):
        sim.simulator.clear()
        sim.simulator.set_rate_limits([parse_limit("requests=3 window=60 model=ma")])
        try:
            answers = []
            for asking, other in [(one, two), (two, one)] * 3:
                answers.append(await asking.ask())
                left = await asking.requests_left("a", "ma")
                await until(lambda o=other, n=left: _is(o.requests_left("a", "ma"), n), "the headroom on the other")
        finally:
            sim.simulator.set_rate_limits([])
    assert [o.status for o in sim.simulator.observations if o.model == "ma"] == [200, 200, 200]
    assert [a.provider for a in answers] == ["a", "a", "a", "b", "b", "b"]
    reasons = [s.reason for a in answers[3:] for s in a.skipped]
    assert reasons == [pb.FAILURE_REASON_PREDICTED_RATE_LIMIT] * 3, reasons


async def _not(value: Awaitable[object], unexpected: object) -> bool:
    return await value != unexpected


async def half_open(one: Replica, two: Replica) -> Replica:
    """The replica that won the probe of a's half-open breaker (the other still sees a UNHEALTHY)."""
    won: list[Replica] = []

    async def either() -> bool:
        states = await asyncio.gather(one.state("a"), two.state("a"))
        won[:] = [r for r, s in zip((one, two), states, strict=True) if s != ppb.HEALTH_STATE_UNHEALTHY]
        return bool(won)

    await until(either, "a half-open breaker's probe claimed")
    assert len(won) == 1, "both replicas may probe"
    return won[0]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server to start and stop a private one")
async def test_with_redis_gone_both_serve_from_memory_and_say_so_once(sim: SimulatorHandle, tmp_path: Path) -> None:
    port = free_port()
    redis = start_redis(port)
    try:
        config = config_yaml(sim, tmp_path / "gateway.yaml", f"redis://127.0.0.1:{port}/0")
        async with replicas(config) as (one, two):
            redis.kill()
            redis.wait(10)
            for replica in (one, two):
                await until(lambda r=replica: _is(r.shared(), 0.0), "the metric says Redis is away")
            sim.simulator.clear()
            answers = [await r.ask("hi [[fault:429 retry_after=30 model=ma]]") for r in (one, two)]
            answers += [await r.ask() for r in (one, two) for _ in range(3)]
            assert [a.provider for a in answers] == ["b"] * 8
            assert models_asked(sim).count("ma") == 2  # each replica learnt a's cooldown itself
            redis = start_redis(port)
            for replica in (one, two):
                await until(lambda r=replica: _is(r.shared(), 1.0), "the metric says Redis is back")
            assert [(r.lines(DOWN_LINE), r.lines(BACK_LINE)) for r in (one, two)] == [(1, 1), (1, 1)]
            # Shared again: a cooldown one starts now reaches two.
            sim.simulator.clear()
            with contextlib.suppress(grpc.aio.AioRpcError):  # a cooling down here, b refuses: nothing answers
                await one.ask("hi [[fault:429 retry_after=30 model=mb]]")
            await until(lambda: _is(two.state("b"), ppb.HEALTH_STATE_COOLING_DOWN), "the cooldown on two")
    finally:
        redis.kill()
        redis.wait(10)


def start_redis(port: int) -> subprocess.Popen[bytes]:
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_the_redis_backend_needs_the_url_the_budgets_use() -> None:
    entry = {"name": "a", "type": "openai", "no_api_key": True, "models": [{"name": "m", "context_window": 10}]}
    with pytest.raises(ConfigError, match=r"health\.backend: redis needs limits\.redis_url"):
        parse({"providers": [entry], "health": {"backend": "redis"}}, source="test", env={})
    shared = parse(
        {"providers": [entry], "health": {"backend": "redis"}, "limits": {"redis_url": redis_url()}}, source="t", env={}
    )
    assert (shared.health.backend, shared.limits.backend) == ("redis", "memory")  # budgets may stay in memory
    assert parse({"providers": [entry]}, source="test", env={}).health.backend == "memory"
