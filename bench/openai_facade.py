"""The OpenAI-compatible HTTP face against the gRPC face and the bare SDK, to the same fast local upstream.

    .venv/bin/python bench/openai_facade.py [--requests 300] [--concurrency 50] [--seconds 5]

Three processes: the upstream (`python -m llm_simulator`, no pacing between chunks), the gateway
(`gateway-service serve --openai-port`, pointed at it) and this one. Measured in the same run, one request at
a time and interleaved (a busy machine slows each path alike):

  1. time to first token, p50 and p99: the bare `openai` SDK straight to the upstream; the same SDK with its
     `base_url` at the gateway's HTTP face; a gRPC StreamChat client through the gateway;
  2. streams per second at `--concurrency` streams for `--seconds`, each path.

Target: the HTTP face's added time to first token within 1 ms p50 of the gRPC face's. LiteLLM's proxy is
compared when `litellm` is installed (an optional extra); otherwise the script says it was skipped and why.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import grpc
import openai
import psutil

from bench.gateway_overhead import concurrent, pct
from bench.results import save, target
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from servicekit.procs import ServiceProcess, free_port

CONFIG = """
providers:
  - {{name: fast, type: openai_compatible, base_url: "{url}/v1", api_key_env: BENCH_KEY, idle_timeout_s: 30,
     models: [{{name: fast-model, context_window: 100000}}]}}
routes:
  default: [fast/fast-model]
"""
MESSAGES = [{"role": "user", "content": "hi"}]
Once = Callable[[], Awaitable[float]]


async def sdk_once(client: openai.AsyncOpenAI, model: str) -> float:
    """Seconds to the first content chunk of one streamed completion."""
    start = time.perf_counter()
    first = 0.0
    stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    async for chunk in stream:
        if not first and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
    return first


async def grpc_once(stub: chat_service_pb2_grpc.ChatServiceStub) -> float:
    start = time.perf_counter()
    first = 0.0
    request = pb.StreamChatRequest(model="default", messages=[pb.Message(role=pb.ROLE_USER, content="hi")])
    async for event in stub.StreamChat(request, timeout=10):
        if not first and event.HasField("delta"):
            first = time.perf_counter() - start
    return first


async def interleaved(paths: dict[str, Once], n: int) -> dict[str, list[float]]:
    """Each path `n` times, one request at a time, rotating which goes first."""
    for once in paths.values():  # warm up connections and code paths
        for _ in range(max(10, n // 10)):
            await once()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for i in range(n):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            samples[name].append(await paths[name]())
    return samples


async def run(args: argparse.Namespace, upstream: str, gateway: ServiceProcess, openai_port: int) -> None:
    bare = openai.AsyncOpenAI(base_url=f"{upstream}/v1", api_key="sk-bench", max_retries=0)
    face = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{openai_port}/v1", api_key="unused", max_retries=0)
    channel = grpc.aio.insecure_channel(gateway.address)
    stub = chat_service_pb2_grpc.ChatServiceStub(channel)
    paths: dict[str, Once] = {
        "bare SDK": lambda: sdk_once(bare, "fast-model"),
        "HTTP face": lambda: sdk_once(face, "default"),
        "gRPC face": lambda: grpc_once(stub),
    }
    samples = await interleaved(paths, args.requests)
    print(f"time to first token, {args.requests} sequential requests each, interleaved (ms):")
    print(f"  {'path':<12} {'p50':>8} {'p99':>8} {'added p50':>10} {'added p99':>10}")
    base50, base99 = pct(samples["bare SDK"], 0.5), pct(samples["bare SDK"], 0.99)
    for name, values in samples.items():
        p50, p99 = pct(values, 0.5), pct(values, 0.99)
        print(f"  {name:<12} {p50:>8.3f} {p99:>8.3f} {p50 - base50:>+10.3f} {p99 - base99:>+10.3f}")
    rates = {}
    for name, once in paths.items():
        rates[name] = await concurrent(once, args.concurrency, args.seconds) / args.seconds
    print(f"streams per second at {args.concurrency} concurrent streams for {args.seconds:g} s:")
    for name, rate in rates.items():
        print(f"  {name:<12} {rate:>8.1f}/s  ({rate / rates['bare SDK']:.2f}x the bare SDK)")
    http_vs_grpc = pct(samples["HTTP face"], 0.5) - pct(samples["gRPC face"], 0.5)
    target("HTTP face TTFT p50 minus gRPC face TTFT p50", http_vs_grpc, at_most=1.0, unit=" ms")
    if importlib.util.find_spec("litellm") is None:
        print("LiteLLM's proxy: skipped (litellm is not installed; it is not a dependency of this project)")
    else:
        print("LiteLLM's proxy: installed but not measured by this script yet")
    path = save(
        "openai_facade",
        {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "ttft_ms": {name: {"p50": pct(v, 0.5), "p99": pct(v, 0.99)} for name, v in samples.items()},
            "samples_ms": {name: [x * 1000 for x in v] for name, v in samples.items()},
            "streams_per_s": rates,
            "http_minus_grpc_p50_ms": http_vs_grpc,
        },
    )
    print(f"figures saved to {path}")
    await channel.close()
    await bare.close()
    await face.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    port, openai_port = free_port(), free_port()
    upstream = psutil.Popen(
        [sys.executable, "-m", "llm_simulator", "--port", str(port), "--chunk-delay-ms", "0"],
        stderr=open(os.devnull, "w"),
    )
    url = f"http://127.0.0.1:{port}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(CONFIG.format(url=url))
    env = {**os.environ, "BENCH_KEY": "sk-bench", "LOG_LEVEL": "WARNING"}
    try:
        with ServiceProcess(
            "gateway-service", "--config", config.name, "--openai-port", str(openai_port), env=env
        ) as gateway:
            asyncio.run(_main(args, url, gateway, openai_port))
    finally:
        upstream.terminate()
        upstream.wait(10)
        os.unlink(config.name)
    return 0


async def _main(args: argparse.Namespace, url: str, gateway: ServiceProcess, openai_port: int) -> None:
    await gateway.wait_serving(timeout_s=30)
    deadline = time.monotonic() + 30
    while True:  # the simulator starts beside the gateway
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
            writer.close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    print(f"upstream {url}, gateway gRPC {gateway.address}, HTTP face 127.0.0.1:{openai_port}")
    await run(args, url, gateway, openai_port)


if __name__ == "__main__":
    sys.exit(main())
