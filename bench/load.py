"""Sustained load through the gateway: many concurrent streams, a few injected faults, the gateway's memory.

    .venv/bin/python bench/load.py [--streams 500] [--seconds 60] [--fault-rate 0.05] [--workers 1]

Three kinds of process: the upstream (`python -m llm_simulator`, OpenAI wire format, 10 ms between words),
the gateway (`gateway-service serve`; with `--workers N`, N of them sharing one port with SO_REUSEPORT,
switched on explicitly for this case only) and this one, which keeps `--streams` StreamChat calls open at
all times for `--seconds`. A share `--fault-rate` of the requests carries a fault marker, chosen in turn
from FAULTS; each must end with exactly the status docs/gateway.md#what-a-caller-sees promises for it,
and every other request must succeed. Printed: outcomes by kind (expected and unexpected), time to first
token p50/p99, streams per second (and per core used by the gateways), and the gateways' RSS idle and at
peak, sampled every 100 ms. Targets (#23): streams per gateway CPU-second >= 250; per process RSS idle
<= 100 MB and, at 1,000 streams (`--streams 1000`), peak <= 180 MB (printed against it at fewer streams too).
The baseline for TTFT is the same request straight to the upstream with the `openai` SDK, measured in the
same run before the load starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import openai
import psutil
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bench.results import target
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from servicekit.procs import BIN, free_port, wait_for_health

CONFIG = """
providers:
  - {{name: primary, type: openai_compatible, base_url: "{url}/v1", api_key_env: BENCH_KEY,
     models: [{{name: primary-model, context_window: 100000}}]}}
  - {{name: fallback, type: openai_compatible, base_url: "{url}/v1", api_key_env: BENCH_KEY,
     models: [{{name: fallback-model, context_window: 100000}}]}}
routes:
  default: [primary/primary-model, fallback/fallback-model]
"""
PROMPT = "[[reply:one two three four five six seven eight nine ten eleven twelve]]"
# Injected faults and the outcome each must have (code name, ErrorInfo reason). Faults hit both providers.
FAULTS = {
    "disconnect at=3": ("UNAVAILABLE", "MID_STREAM_FAILURE"),
    "400": ("INVALID_ARGUMENT", "PROVIDER_REJECTED_REQUEST"),
    "context": ("OUT_OF_RANGE", "CONTEXT_TOO_LONG"),
    "429 retry_after=0": ("RESOURCE_EXHAUSTED", "ALL_PROVIDERS_RATE_LIMITED"),
}
OK = ("OK", "")


@dataclass
class Tally:
    outcomes: Counter[tuple[str, tuple[str, str], tuple[str, str]]] = field(default_factory=Counter)
    ttft: list[float] = field(default_factory=list)
    done: int = 0


async def one_stream(stub: chat_service_pb2_grpc.ChatServiceStub, fault: str | None, tally: Tally) -> None:
    text = PROMPT + (f" [[fault:{fault}]]" if fault else "")
    request = pb.StreamChatRequest(model="default", messages=[pb.Message(role=pb.ROLE_USER, content=text)])
    start, first = time.perf_counter(), 0.0
    outcome = OK
    try:
        async for event in stub.StreamChat(request, timeout=30):
            if not first and event.HasField("delta"):
                first = time.perf_counter() - start
    except grpc.aio.AioRpcError as error:
        outcome = (error.code().name, _reason(error))
    expected = FAULTS[fault] if fault else OK
    tally.outcomes[(fault or "none", expected, outcome)] += 1
    if first and outcome == OK:
        tally.ttft.append(first)
    tally.done += 1


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return "(no ErrorInfo)"


async def load(address: str, streams: int, seconds: float, fault_rate: float, tally: Tally) -> float:
    # A connection per 50 streams (a local subchannel pool each, or gRPC would share one connection): the server
    # allows 100 at once on one (ServerOptions.max_concurrent_streams), and a stream opened as another closes
    # can still count against it, refused with RST_STREAM REFUSED_STREAM (UNAVAILABLE, no ErrorInfo).
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(max(1, -(-streams // 50)))]
    stubs = [chat_service_pb2_grpc.ChatServiceStub(c) for c in channels]
    kinds, rng = list(FAULTS), random.Random(7)
    counter = 0
    end = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal counter
        while time.perf_counter() < end:
            counter += 1
            fault = kinds[counter % len(kinds)] if rng.random() < fault_rate else None
            await one_stream(stubs[i % len(stubs)], fault, tally)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(streams)))
    elapsed = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    return elapsed


async def direct_ttft(url: str, n: int = 50) -> list[float]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-bench", max_retries=0)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        stream = await client.chat.completions.create(
            model="fallback-model", messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        first = 0.0
        async for chunk in stream:
            if not first and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
        out.append(first)
    await client.close()
    return out


class RssSampler:
    """Peak resident memory of each gateway process, sampled every 100 ms."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = [0] * len(pids)
        self.cpu0 = [self._cpu(p) for p in self.procs]

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        t = proc.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> list[int]:
        return [p.memory_info().rss for p in self.procs]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.peak = [max(a, b) for a, b in zip(self.peak, self.rss(), strict=True)]
            await asyncio.sleep(0.1)

    def cpu_used(self) -> float:
        return sum(self._cpu(p) - c for p, c in zip(self.procs, self.cpu0, strict=True))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def serve_flags() -> set[str]:
    """Flags this gateway build knows (--insecure-dev and --reuse-port arrived with authentication)."""
    help_text = subprocess.run([str(BIN / "gateway-service"), "serve", "--help"], capture_output=True, text=True).stdout
    return {
        flag
        for flag in ("--insecure-dev", "--reuse-port", "--max-calls", "--max-calls-per-caller")
        if flag in help_text
    }


def start_gateways(config: str, port: int, workers: int, streams: int = 0) -> list[subprocess.Popen[bytes]]:
    known = serve_flags()
    flags = ["--insecure-dev"] if "--insecure-dev" in known else []
    if streams and "--max-calls" in known:  # the load is the point here: room for every stream (docs/security.md)
        flags += ["--max-calls", str(streams), "--max-streams", str(streams)]
        if "--max-calls-per-caller" in known:  # every stream here is one caller's
            flags += ["--max-calls-per-caller", str(streams), "--max-streams-per-caller", str(streams)]
    if workers > 1 and "--reuse-port" in known:
        flags.append("--reuse-port")  # only here: N processes share the port on purpose
    env = {**os.environ, "BENCH_KEY": "sk-bench", "LOG_LEVEL": "WARNING"}
    command = [str(BIN / "gateway-service"), "serve", "--config", config, "--host", "127.0.0.1", "--port", str(port)]
    return [subprocess.Popen([*command, *flags], env=env, stderr=subprocess.DEVNULL) for _ in range(workers)]


def report(
    args: argparse.Namespace, tally: Tally, elapsed: float, base: list[float], rss: RssSampler, idle: list[int]
) -> None:
    mb = 1024 * 1024
    print(
        f"\n{args.streams} concurrent streams for {elapsed:.1f} s through {args.workers} gateway process(es), "
        f"{args.fault_rate:.0%} injected faults"
    )
    print(
        f"  streams completed {tally.done}   streams/s {tally.done / elapsed:.1f}   "
        f"per gateway core used {tally.done / max(rss.cpu_used(), 1e-9):.1f} streams per CPU-second"
    )
    target("streams per gateway CPU-second", tally.done / max(rss.cpu_used(), 1e-9), at_least=250)
    print("  outcomes (fault -> expected -> got, count):")
    wrong = 0
    for (fault, expected, got), count in sorted(tally.outcomes.items()):
        mark = "ok" if got == expected else "UNEXPECTED"
        wrong += count if got != expected else 0
        shown = ["/".join(o).strip("/") or "OK" for o in (expected, got)]
        print(f"    {mark:<10} {fault:<18} expected {shown[0]:<40} got {shown[1]:<40} {count}")
    target("unexpected outcomes", wrong, at_most=0)
    b50, b99 = pct(base, 0.5), pct(base, 0.99)
    g50, g99 = pct(tally.ttft, 0.5), pct(tally.ttft, 0.99)
    print(f"  TTFT through the gateway under load: p50 {g50:.1f} ms  p99 {g99:.1f} ms")
    print(
        f"  baseline, one direct stream at a time (openai SDK): p50 {b50:.1f} ms  p99 {b99:.1f} ms;"
        f" ratio p50 {g50 / b50:.1f}x  p99 {g99 / b99:.1f}x"
    )
    for i, (before, peak) in enumerate(zip(idle, rss.peak, strict=True)):
        target(f"gateway {i}: RSS idle", before / mb, at_most=100, unit=" MB")
        target(f"gateway {i}: RSS peak at {args.streams} streams", peak / mb, at_most=180, unit=" MB")


async def _main(args: argparse.Namespace) -> int:
    up_port, gw_port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "llm_simulator", "--port", str(up_port), "--chunk-delay-ms", "10"],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{up_port}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(CONFIG.format(url=url))
    gateways = start_gateways(config.name, gw_port, args.workers, args.streams)
    try:
        for proc in gateways:
            await wait_for_health(f"127.0.0.1:{gw_port}", "readiness", 1, proc=proc, timeout_s=60)
        await asyncio.sleep(1.0)  # every worker bound and settled
        base = await direct_ttft(url)
        rss = RssSampler([p.pid for p in gateways])
        others = {"upstream": RssSampler([upstream.pid]), "load generator": RssSampler([os.getpid()])}
        idle = rss.rss()
        tally, stop = Tally(), asyncio.Event()
        sampler = asyncio.create_task(rss.run(stop))
        elapsed = await load(f"127.0.0.1:{gw_port}", args.streams, args.seconds, args.fault_rate, tally)
        stop.set()
        await sampler
        report(args, tally, elapsed, base, rss, idle)
        used = ", ".join(f"{name} {o.cpu_used():.1f}" for name, o in {"gateways": rss, **others}.items())
        # On a small machine the load generator and the upstream, not the gateway, may be what is saturated.
        print(f"  CPU seconds used in {elapsed:.0f} s: {used} (machine: {os.cpu_count()} cores)")
    finally:
        for proc in [*gateways, upstream]:
            proc.terminate()
        for proc in [*gateways, upstream]:
            proc.wait(30)
        Path(config.name).unlink()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=1)
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
