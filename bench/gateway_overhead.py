"""What the gateway adds on top of calling a provider's SDK directly.

    .venv/bin/python bench/gateway_overhead.py [--requests 300] [--concurrency 50] [--seconds 5]

Three processes: the upstream (`python -m llm_simulator`, OpenAI wire format, no pacing between
chunks), the gateway (`gateway-service serve`, pointed at it) and this one, the load generator.
Each figure is measured against a baseline taken in the same run:

  1. one stream at a time: time to first token and total time, `openai` SDK straight to the
     upstream versus the same request through the gateway (p50, p99, added ms);
  2. 50 concurrent streams: requests/s through the gateway / straight to the upstream, and the
     gateway process's CPU time per request / this process's CPU per request with the bare SDK;
  3. failover cost: first token from the fallback after a 429 from the primary, minus the
     fallback's own first token time (both through the gateway), beside the primary's 429 round
     trip with the bare SDK (the least any client pays to learn of the 429);
  4. the per-request INFO access log: a second gateway at LOG_LEVEL=INFO (the SDK's "HTTP Request"
     line for every upstream request) against the first at WARNING, 50 streams each, alternating.

The baseline client is the bare `openai` SDK on its default stack (httpx2); the gateway runs its
providers on their default stack (`http_client: aiohttp`). Targets (#23): added TTFT p50 <= 0.2 ms and
p99 <= 1 ms; throughput >= 1.0x the bare SDK, gateway CPU per request <= 1.0x the bare client's (7-chunk
streams; bench/gateway_cpu.py has the 20-chunk ratio against its 0.7 target), access log costing < 5 % of
throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import openai
import psutil

from bench.results import save, target
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from servicekit.procs import ServiceProcess, free_port

BIN = Path(sys.executable).parent
PROMPT = "hi"
CONFIG = """
providers:
  - {{name: primary, type: openai_compatible, base_url: "{url}/v1", api_key_env: BENCH_KEY, idle_timeout_s: 30,
     models: [{{name: primary-model, context_window: 100000}}]}}
  - {{name: fallback, type: openai_compatible, base_url: "{url}/v1", api_key_env: BENCH_KEY, idle_timeout_s: 30,
     models: [{{name: fallback-model, context_window: 100000}}]}}
routes:
  default: [primary/primary-model, fallback/fallback-model]
"""

Timed = tuple[float, float]  # (time to first token, total), seconds


async def direct_once(client: openai.AsyncOpenAI, text: str = PROMPT) -> Timed:
    start = time.perf_counter()
    first = 0.0
    stream = await client.chat.completions.create(
        model="fallback-model",
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if not first and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start


async def direct_429_once(client: openai.AsyncOpenAI, text: str) -> Timed:
    """The primary's 429 round trip with the bare SDK: what any client pays before it can fail over."""
    start = time.perf_counter()
    try:
        await client.chat.completions.create(
            model="primary-model",
            messages=[{"role": "user", "content": text}],
            stream=True,
            stream_options={"include_usage": True},
        )
    except openai.RateLimitError:
        elapsed = time.perf_counter() - start
        return elapsed, elapsed
    raise AssertionError("the upstream did not answer 429")


async def gateway_once(
    stub: chat_service_pb2_grpc.ChatServiceStub, model: str = "fallback/fallback-model", text: str = PROMPT
) -> Timed:
    start = time.perf_counter()
    first = 0.0
    request = pb.StreamChatRequest(model=model, messages=[pb.Message(role=pb.ROLE_USER, content=text)])
    async for event in stub.StreamChat(request, timeout=10):
        if not first and event.HasField("delta"):
            first = time.perf_counter() - start
        if event.HasField("done"):
            assert event.done.finish_reason == pb.FINISH_REASON_STOP
    return first, time.perf_counter() - start


async def sequential(once: Callable[[], Awaitable[Timed]], n: int) -> list[Timed]:
    for _ in range(max(20, n // 10)):  # warm up connections, code paths and caches
        await once()
    return [await once() for _ in range(n)]


async def paired(
    first: Callable[[], Awaitable[Timed]], second: Callable[[], Awaitable[Timed]], n: int
) -> tuple[list[Timed], list[Timed]]:
    """Both, one request at a time, alternating: a busy machine slows both sides alike.

    In the order a b b a a b b a ..., so that each side follows itself as often as the other: a request
    starts while the previous one's tail still runs (the upstream finishing its response, the gateway its
    records), and a fixed a-then-b order would charge only b with a's tail. Measured 2026-12-02 with two
    to four identical gateways in a row after the bare SDK, four runs: the first came out 0.1-0.2 ms slower
    at p50 than the others.
    """
    await sequential(first, n // 10)
    await sequential(second, n // 10)
    a: list[Timed] = []
    b: list[Timed] = []
    for i in range(n):
        if i % 2:
            b.append(await second())
            a.append(await first())
        else:
            a.append(await first())
            b.append(await second())
    return a, b


async def concurrent(once: Callable[[], Awaitable[object]], concurrency: int, seconds: float) -> int:
    """Calls of `once` completed by `concurrency` callers, each calling it again at once, for `seconds`."""
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await once()
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def row(label: str, direct: float, through: float, unit: str = "ms") -> None:
    print(f"  {label:<34} {direct:>10.3f} {through:>10.3f} {through - direct:>+10.3f} {unit}")


async def throughput(
    stub: chat_service_pb2_grpc.ChatServiceStub, process: psutil.Process, args: argparse.Namespace
) -> tuple[int, float]:
    """Requests done at `args.concurrency` streams for `args.seconds`, and the process's CPU seconds meanwhile."""
    cpu0 = cpu_seconds(process)
    done = await concurrent(lambda: gateway_once(stub), args.concurrency, args.seconds)
    return done, cpu_seconds(process) - cpu0


def access_line_cost_us(lines: int = 20000) -> float:
    """CPU microseconds for one access line through the gateway's own logging set-up, to a file: the cost the
    throughput comparison above tries to see through a busy machine's noise."""
    import logging

    from gateway_service.providers.streaming import access_log
    from servicekit import logs

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("INFO")
    with open(os.devnull, "w") as sink:
        root.handlers[0].setStream(sink)  # type: ignore[attr-defined]
        start = time.process_time()
        for _ in range(lines):
            access_log.info(
                "upstream request",
                extra={
                    "provider": "fallback",
                    "model": "fallback-model",
                    "outcome": "ok",
                    "duration_ms": 3.2,
                    "upstream_request_id": "req_sim000001",
                },
            )
        elapsed = time.process_time() - start
    root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    return elapsed / lines * 1e6


async def access_log_cost(args: argparse.Namespace, quiet: ServiceProcess, logging: ServiceProcess) -> None:
    """Throughput and CPU of the same gateway at WARNING and at INFO (access log on), alternating rounds."""
    channels = [grpc.aio.insecure_channel(g.address) for g in (quiet, logging)]
    stubs = [chat_service_pb2_grpc.ChatServiceStub(c) for c in channels]
    processes = [psutil.Process(g.proc.pid) for g in (quiet, logging)]
    for stub in stubs:
        await sequential(lambda stub=stub: gateway_once(stub), 20)  # type: ignore[misc]
    totals = [[0, 0.0], [0, 0.0]]
    rounds = 4  # short rounds, alternating (off, on, on, off, ...): a busy machine's drift hits both sides alike
    short = argparse.Namespace(**{**vars(args), "seconds": args.seconds / 2})
    for index in range(rounds):
        for side in (0, 1) if index % 2 == 0 else (1, 0):
            done, cpu = await throughput(stubs[side], processes[side], short)
            totals[side][0] += done
            totals[side][1] += cpu
    (off_n, off_cpu), (on_n, on_cpu) = totals
    span = rounds * short.seconds
    print(f"\n4. the per-request INFO access log, {args.concurrency} streams, {rounds} x {short.seconds:g}s each side")
    print(
        f"  requests/s log off {off_n / span:9.1f}   log on {on_n / span:9.1f}"
        f"   cost {1 - on_n / off_n:+.1%} of throughput"
    )
    target("access log: cost of throughput", 100 * (1 - on_n / off_n), at_most=5, unit=" %")
    print(f"  gateway CPU ms/request: log off {off_cpu / off_n * 1000:.3f}   log on {on_cpu / on_n * 1000:.3f}")
    line_us = access_line_cost_us()
    print(
        f"  one access line, built, JSON-formatted and written (this process, same formatter): {line_us:.1f} us"
        f" = {line_us / (off_cpu / off_n * 1e6):.1%} of the gateway's CPU per request"
    )
    for channel in channels:
        await channel.close()


async def run(args: argparse.Namespace, upstream_url: str, gateway: ServiceProcess) -> None:
    client = openai.AsyncOpenAI(base_url=f"{upstream_url}/v1", api_key="sk-bench", max_retries=0)
    channel = grpc.aio.insecure_channel(gateway.address)
    stub = chat_service_pb2_grpc.ChatServiceStub(channel)
    me, gw = psutil.Process(), psutil.Process(gateway.proc.pid)

    direct, through = await paired(lambda: direct_once(client), lambda: gateway_once(stub), args.requests)
    print(f"\n1. one stream at a time ({args.requests} requests, {PROMPT!r} -> 7 chunks)")
    print(f"  {'':<34} {'direct':>10} {'gateway':>10} {'added':>10}")
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        row(f"time to first token {name}", pct([d[0] for d in direct], q), pct([t[0] for t in through], q))
        row(f"total time {name}", pct([d[1] for d in direct], q), pct([t[1] for t in through], q))

    cpu0 = cpu_seconds(me)
    direct_n = await concurrent(lambda: direct_once(client), args.concurrency, args.seconds)
    direct_cpu = (cpu_seconds(me) - cpu0) / direct_n
    through_n, gateway_cpu_s = await throughput(stub, gw, args)
    gateway_cpu = gateway_cpu_s / through_n
    print(f"\n2. {args.concurrency} concurrent streams for {args.seconds:g}s each")
    print(
        f"  requests/s direct {direct_n / args.seconds:9.1f}   gateway {through_n / args.seconds:9.1f}"
        f"   ratio {through_n / direct_n:.2f}"
    )
    target("concurrent streams: requests/s gateway / direct", through_n / direct_n, at_least=1.0)
    print(
        f"  CPU ms/request: bare SDK client {direct_cpu * 1000:.3f}   gateway process {gateway_cpu * 1000:.3f}"
        f"   ratio {gateway_cpu / direct_cpu:.2f}"
    )
    target("concurrent streams: CPU per request gateway / direct", gateway_cpu / direct_cpu, at_most=1.0)

    failing = f"{PROMPT} [[fault:429 retry_after=0 model=primary-model]]"
    own, after = await paired(
        lambda: gateway_once(stub, "fallback/fallback-model", failing),
        lambda: gateway_once(stub, "default", failing),
        args.requests,
    )
    own50, after50 = pct([o[0] for o in own], 0.5), pct([a[0] for a in after], 0.5)
    own99, after99 = pct([o[0] for o in own], 0.99), pct([a[0] for a in after], 0.99)
    print("\n3. failover: first token from the fallback after a 429 from the primary")
    print(f"  fallback alone TTFT p50 {own50:.3f} ms; after a 429 p50 {after50:.3f} ms")
    print(f"  failover cost p50 {after50 - own50:+.3f} ms (p99 {after99 - own99:+.3f} ms)")
    target("failover cost p50", after50 - own50, at_most=1, unit=" ms")
    bare = await sequential(lambda: direct_429_once(client, failing), args.requests)
    bare50 = pct([b[0] for b in bare], 0.5)
    # The floor any client pays to learn of the 429 (the gateway's adapter skips create()'s checks).
    print(
        f"  the primary's 429 round trip alone, bare openai SDK create(): p50 {bare50:.3f} ms;"
        f" failover cost / that: {(after50 - own50) / bare50:.2f}"
    )
    print()
    for q, bound in ((0.5, 0.2), (0.99, 1.0)):  # #23's targets (#9's were 0.6 and 2 ms)
        added = pct([t[0] for t in through], q) - pct([d[0] for d in direct], q)
        target(f"added time to first token p{int(q * 100)}", added, at_most=bound, unit=" ms")
    path = save(
        "gateway_overhead",
        {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "ttft_ms": {
                "bare SDK": [d[0] * 1000 for d in direct],
                "through the gateway": [t[0] * 1000 for t in through],
            },
            "throughput_ratio": through_n / direct_n,
            "cpu_ratio": gateway_cpu / direct_cpu,
            "failover_cost_ms": {"p50": after50 - own50, "p99": after99 - own99},
        },
    )
    print(f"figures saved to {path}")
    await channel.close()
    await client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    port = free_port()
    upstream = psutil.Popen(
        [sys.executable, "-m", "llm_simulator", "--port", str(port), "--chunk-delay-ms", "0"],
        stderr=open(os.devnull, "w"),
    )
    url = f"http://127.0.0.1:{port}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(CONFIG.format(url=url))
    # Sections 1-3 at WARNING; section 4 compares with a second gateway at INFO (the access log on).
    env = {**os.environ, "BENCH_KEY": "sk-bench", "LOG_LEVEL": "WARNING"}
    try:
        with (
            ServiceProcess("gateway-service", "--config", config.name, env=env) as gateway,
            ServiceProcess("gateway-service", "--config", config.name, env={**env, "LOG_LEVEL": "INFO"}) as logging,
        ):
            asyncio.run(_main(args, url, gateway, logging))
    finally:
        upstream.terminate()
        upstream.wait(10)
        os.unlink(config.name)
    return 0


async def _wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


async def _main(args: argparse.Namespace, url: str, gateway: ServiceProcess, logging: ServiceProcess) -> None:
    await _wait_port(int(url.rsplit(":", 1)[1]))
    await gateway.wait_serving(timeout_s=30)
    await logging.wait_serving(timeout_s=30)
    print(f"upstream {url} (pid {os.getpid()} is the load generator), gateway {gateway.address}")
    await run(args, url, gateway)
    await access_log_cost(args, gateway, logging)


if __name__ == "__main__":
    sys.exit(main())
