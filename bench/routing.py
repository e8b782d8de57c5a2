"""Routing policies under load: three local upstreams with different latencies, rate limits and prices, 50
concurrent StreamChat callers for 60 s per policy (issue #22's benchmark).

    .venv/bin/python bench/routing.py [--seconds 60] [--streams 50] [--policies priority,weighted,...]

The upstreams are simulators in this process (llm_simulator), each stating its rate limit in OpenAI's
`x-ratelimit-*` headers and refusing past it with 429 and `retry-after`, as the real API does:

    fast     first token after 20 ms, 5 ms between words,  300 requests per 10 s,  $5 / $15 per Mtok
    medium   first token after 100 ms, 10 ms between words, 1200 requests per 10 s, $1 / $2
    slow     first token after 300 ms, 20 ms between words, 6000 requests per 10 s, $0.15 / $0.60

For each policy a fresh gateway process (`gateway-service serve`, default failover and routing settings)
and fresh upstreams; route `default` is the three in that order (weighted: medium weighs 2). Prints per
policy the share of answered requests per upstream, the upstream 429s, p50/p99 time to first token as the
callers saw it, calls answered per second, and p99 and 429s as ratios to the priority run beside them (the
baseline: today's fixed order). Saves bench/results/routing.json.

Then hedging (`--hedge-ms`, default 100; `--hedging-only` runs just this): route [stalling, backup] of two
upstreams answering at once, the first stalling 5 % of its requests (every 20th, a stall marker) until the
gateway gives up at its first-token timeout (2 s); the same 50 callers with and without `hedge_after_ms`. It
prints p50/p99 time to first token of each, and the hedged p99 against its target: the hedge delay plus the
upstreams' own p99 (the two answer alike: the unhedged run's p99 over the requests that did not stall).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import yaml

from bench.results import save
from llm_simulator import SimulatorHandle, start_simulator
from llm_simulator.ratelimit import parse_limit
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from servicekit.procs import ServiceProcess

POLICIES = ("priority", "weighted", "lowest_latency", "lowest_cost", "least_busy")


@dataclass(frozen=True)
class Upstream:
    name: str
    first_token_ms: int
    word_delay_s: float
    limit: str  # llm_simulator/ratelimit.py spec
    prices: tuple[float, float]


UPSTREAMS = (
    Upstream("fast", 20, 0.005, "requests=300 window=10", (5.0, 15.0)),
    Upstream("medium", 100, 0.010, "requests=1200 window=10", (1.0, 2.0)),
    Upstream("slow", 300, 0.020, "requests=6000 window=10", (0.15, 0.6)),
)


@dataclass
class Calls:
    ttfts: list[float] = field(default_factory=list)
    answered_by: Counter[str] = field(default_factory=Counter)
    alone: list[float] = field(default_factory=list)  # hedging: TTFTs of the requests that did not stall
    errors: Counter[str] = field(default_factory=Counter)


async def start_upstreams() -> list[SimulatorHandle]:
    handles = []
    for upstream in UPSTREAMS:
        handle = await start_simulator(chunk_delay_s=upstream.word_delay_s)
        handle.simulator.push_fault(f"slow ms={upstream.first_token_ms}", times=-1)
        handle.simulator.set_rate_limits([parse_limit(upstream.limit)])
        handles.append(handle)
    return handles


def config_yaml(handles: list[SimulatorHandle], policy: str) -> str:
    providers = [
        {
            "name": u.name,
            "type": "openai",
            "base_url": f"{h.base_url}/v1",
            "api_key_env": "SIM_KEY",
            "connect_timeout_s": 1.0,
            "first_token_timeout_s": 2.0,
            "idle_timeout_s": 2.0,
            "timeout_s": 10.0,
            "models": [
                {
                    "name": "m",
                    "context_window": 100_000,
                    "input_usd_per_mtok": u.prices[0],
                    "output_usd_per_mtok": u.prices[1],
                }
            ],
        }
        for u, h in zip(UPSTREAMS, handles, strict=True)
    ]
    route: dict[str, Any] = {"targets": [f"{u.name}/m" for u in UPSTREAMS], "policy": policy}
    if policy == "weighted":
        route["weights"] = {"medium/m": 2}
    return yaml.safe_dump({"providers": providers, "routes": {"default": route}})


async def caller(chat: chat_service_pb2_grpc.ChatServiceStub, until: float, calls: Calls) -> None:
    request = pb.StreamChatRequest(model="default", messages=[pb.Message(role=pb.ROLE_USER, content="hi")])
    while time.monotonic() < until:
        started, first = time.monotonic(), None
        try:
            async for event in chat.StreamChat(request, timeout=10.0):
                kind = event.WhichOneof("event")
                if kind == "delta" and first is None:
                    first = time.monotonic() - started
                elif kind == "done":
                    calls.answered_by[event.done.provider] += 1
        except grpc.aio.AioRpcError as error:
            calls.errors[error.code().name] += 1
            await asyncio.sleep(0.05)  # an error is quick: do not spin on it
            continue
        if first is not None:
            calls.ttfts.append(first)


async def one_run(policy: str, args: argparse.Namespace) -> dict[str, Any]:
    handles = await start_upstreams()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        file.write(config_yaml(handles, policy))
    env = {**os.environ, "SIM_KEY": "sk-sim-routing", "LOG_LEVEL": "ERROR"}
    extra = ("--max-calls", str(args.streams * 4), "--max-streams", str(args.streams * 4))
    calls = Calls()
    try:
        with ServiceProcess(
            "gateway-service", "--config", file.name, *extra, env=env, security=("--insecure-dev",)
        ) as gw:
            await gw.wait_serving(timeout_s=60)
            async with grpc.aio.insecure_channel(gw.address) as channel:
                chat = chat_service_pb2_grpc.ChatServiceStub(channel)
                until = time.monotonic() + args.seconds
                await asyncio.gather(*(caller(chat, until, calls) for _ in range(args.streams)))
        observed = {u.name: h.simulator.observations for u, h in zip(UPSTREAMS, handles, strict=True)}
    finally:
        for handle in handles:
            await handle.close()
        os.unlink(file.name)
    return summarize(policy, calls, observed, args.seconds)


def summarize(policy: str, calls: Calls, observed: dict[str, list[Any]], seconds: float) -> dict[str, Any]:
    answered = sum(calls.answered_by.values())
    ttfts = sorted(calls.ttfts)
    return {
        "policy": policy,
        "answered": answered,
        "answered_per_s": answered / seconds,
        "share": {name: calls.answered_by[name] / answered if answered else 0.0 for name in observed},
        "upstream_429s": {name: sum(1 for o in obs if o.status == 429) for name, obs in observed.items()},
        "ttft_p50_ms": percentile(ttfts, 50) * 1000,
        "ttft_p99_ms": percentile(ttfts, 99) * 1000,
        "errors": dict(calls.errors),
    }


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def show(run: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    share = "  ".join(f"{name} {value:6.1%}" for name, value in run["share"].items())
    limited = sum(run["upstream_429s"].values())
    per = ", ".join(f"{name} {count}" for name, count in run["upstream_429s"].items())
    line = (
        f"{run['policy']:>14}: {share} | 429s {limited:5d} ({per}) | TTFT p50 {run['ttft_p50_ms']:6.0f} ms "
        f"p99 {run['ttft_p99_ms']:6.0f} ms | {run['answered_per_s']:5.0f} answered/s"
    )
    if baseline is not None and baseline is not run:
        base_429 = sum(baseline["upstream_429s"].values())
        line += f" | p99 / priority {run['ttft_p99_ms'] / baseline['ttft_p99_ms']:.2f}"
        line += f", 429s / priority {limited / base_429:.2f}" if base_429 else ""
    if run["errors"]:
        line += f" | errors {run['errors']}"
    print(line, flush=True)


async def main_async(args: argparse.Namespace) -> None:
    if args.hedging_only:
        path = save("routing_hedging", {"seconds": args.seconds, "streams": args.streams, **await hedging_async(args)})
        print(f"wrote {path}")
        return
    runs: list[dict[str, Any]] = []
    for policy in args.policies:
        print(f"{policy}: {args.streams} streams for {args.seconds:g} s ...", flush=True)
        runs.append(await one_run(policy, args))
    baseline = next((r for r in runs if r["policy"] == "priority"), None)
    print()
    for run in runs:
        show(run, baseline)
    hedging = await hedging_async(args)
    settings = {"seconds": args.seconds, "streams": args.streams, "upstreams": [u.__dict__ for u in UPSTREAMS]}
    path = save("routing", {"settings": settings, "runs": runs, "hedging": hedging})
    print(f"wrote {path}")


STALL_EVERY = 20  # 5 % of the requests stall on the first upstream


def hedge_config(handles: list[SimulatorHandle], hedge_ms: int | None) -> str:
    providers = [
        {
            "name": name,
            "type": "openai",
            "base_url": f"{h.base_url}/v1",
            "api_key_env": "SIM_KEY",
            "connect_timeout_s": 1.0,
            "first_token_timeout_s": 2.0,
            "idle_timeout_s": 2.0,
            "timeout_s": 10.0,
            "models": [{"name": name, "context_window": 100_000}],
        }
        for name, h in zip(("stalling", "backup"), handles, strict=True)
    ]
    route: dict[str, Any] = {"targets": ["stalling/stalling", "backup/backup"]}
    if hedge_ms is not None:
        route["hedge_after_ms"] = hedge_ms
    return yaml.safe_dump({"providers": providers, "routes": {"default": route}})


async def hedge_caller(chat: chat_service_pb2_grpc.ChatServiceStub, until: float, calls: Calls, turn: Any) -> None:
    while time.monotonic() < until:
        stall = next(turn) % STALL_EVERY == STALL_EVERY - 1
        text = "hi [[fault:stall at=0 model=stalling]]" if stall else "hi"
        request = pb.StreamChatRequest(model="default", messages=[pb.Message(role=pb.ROLE_USER, content=text)])
        started, first, by = time.monotonic(), None, ""
        try:
            async for event in chat.StreamChat(request, timeout=10.0):
                kind = event.WhichOneof("event")
                if kind == "delta" and first is None:
                    first = time.monotonic() - started
                elif kind == "done":
                    by = event.done.provider
        except grpc.aio.AioRpcError as error:
            calls.errors[error.code().name] += 1
            await asyncio.sleep(0.05)
            continue
        calls.answered_by[by] += 1
        if first is not None:
            calls.ttfts.append(first)
            if not stall:
                calls.alone.append(first)


async def hedge_run(hedge_ms: int | None, args: argparse.Namespace) -> dict[str, Any]:
    handles = [await start_simulator(chunk_delay_s=0.005) for _ in range(2)]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        file.write(hedge_config(handles, hedge_ms))
    env = {**os.environ, "SIM_KEY": "sk-sim-routing", "LOG_LEVEL": "ERROR"}
    extra = ("--max-calls", str(args.streams * 4), "--max-streams", str(args.streams * 4))
    calls, turn = Calls(), itertools.count()
    try:
        with ServiceProcess(
            "gateway-service", "--config", file.name, *extra, env=env, security=("--insecure-dev",)
        ) as gw:
            await gw.wait_serving(timeout_s=60)
            async with grpc.aio.insecure_channel(gw.address) as channel:
                chat = chat_service_pb2_grpc.ChatServiceStub(channel)
                until = time.monotonic() + args.seconds
                await asyncio.gather(*(hedge_caller(chat, until, calls, turn) for _ in range(args.streams)))
        disconnected = sum(o.client_disconnected for o in handles[0].simulator.observations)
    finally:
        for handle in handles:
            await handle.close()
        os.unlink(file.name)
    ttfts = sorted(calls.ttfts)
    return {
        "hedge_after_ms": hedge_ms,
        "answered": sum(calls.answered_by.values()),
        "answered_by": dict(calls.answered_by),
        "ttft_p50_ms": percentile(ttfts, 50) * 1000,
        "ttft_p99_ms": percentile(ttfts, 99) * 1000,
        "unstalled_p99_ms": percentile(sorted(calls.alone), 99) * 1000,
        "stalling_upstream_disconnects": disconnected,
        "errors": dict(calls.errors),
    }


def show_hedging(plain: dict[str, Any], hedged: dict[str, Any]) -> None:
    for run in (plain, hedged):
        label = f"hedge {run['hedge_after_ms']} ms" if run["hedge_after_ms"] is not None else "no hedging"
        print(
            f"{label:>14}: TTFT p50 {run['ttft_p50_ms']:6.0f} ms p99 {run['ttft_p99_ms']:6.0f} ms | "
            f"answered {run['answered_by']} | stalled upstream disconnects {run['stalling_upstream_disconnects']}"
            + (f" | errors {run['errors']}" if run["errors"] else ""),
            flush=True,
        )
    target = hedged["hedge_after_ms"] + plain["unstalled_p99_ms"]
    print(
        f"hedged p99 {hedged['ttft_p99_ms']:.0f} ms vs target (hedge delay + unstalled p99 "
        f"{plain['unstalled_p99_ms']:.0f} ms) {target:.0f} ms: {hedged['ttft_p99_ms'] / target:.2f} of it; "
        f"p99 hedged / unhedged {hedged['ttft_p99_ms'] / plain['ttft_p99_ms']:.2f}",
        flush=True,
    )


async def hedging_async(args: argparse.Namespace) -> dict[str, Any]:
    print(f"hedging: {args.streams} streams for {args.seconds:g} s, without and with {args.hedge_ms} ms ...")
    plain = await hedge_run(None, args)
    hedged = await hedge_run(args.hedge_ms, args)
    show_hedging(plain, hedged)
    return {"unhedged": plain, "hedged": hedged}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per policy (default 60)")
    parser.add_argument("--streams", type=int, default=50, help="concurrent StreamChat callers (default 50)")
    parser.add_argument("--quick", action="store_true", help="5 s per policy: a smoke test")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated, priority first")
    parser.add_argument("--hedge-ms", type=int, default=100, help="the hedged run's hedge_after_ms (default 100)")
    parser.add_argument("--hedging-only", action="store_true", help="only the hedging rows")
    args = parser.parse_args()
    args.policies = [p for p in args.policies.split(",") if p]
    unknown = set(args.policies) - set(POLICIES)
    if unknown:
        parser.error(f"unknown policies: {', '.join(sorted(unknown))}")
    if args.quick:
        args.seconds = 5.0
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
