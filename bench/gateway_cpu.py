"""CPU per streamed request: the gateway process against the bare openai SDK client, and the gRPC floor under both.

    .venv/bin/python bench/gateway_cpu.py [--rounds 5] [--seconds 4] [--concurrency 20]

One stream is 20 chunks from the upstream (`python -m llm_simulator`, OpenAI wire format, no pacing): a role
chunk, 17 words, the finish chunk and the usage chunk; the gateway answers it with 20 StreamChat events.
Four sides, in rounds that alternate their order (a b c d, d c b a, ...), so that a busy machine's drift falls on
all of them alike; each prints its median CPU per request over the rounds and the spread (min-max):

  bare SDK    this process's CPU per request, the `openai` SDK straight to the upstream (the baseline);
  gateway     the gateway process's CPU per request, the same stream through StreamChat;
  gRPC floor  a bare grpc.aio server on uvloop (this script with --floor) answering StreamChat with the same
              20 prebuilt events and nothing else: what any gRPC gateway in Python pays before it does any work;
  +servicekit the same servicer in servicekit's server (build_server: the Prometheus counts, the gate, the
              drain and the decode guard around it), which the gateway serves in.

Target (#23): gateway / bare SDK <= 0.7. The floor / bare SDK ratio says how much of that the gRPC server alone
takes. `--py-spy PATH` (a py-spy binary; not a dependency of the project) records the gateway through one more
period of load (`--gil`, 250 Hz, raw) and prints where its CPU went, by bench/cpu_split.py's categories, in
microseconds per request of the median measured without the profiler.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import openai
import psutil

from bench.gateway_overhead import concurrent
from bench.results import save, target
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from servicekit.procs import ServiceProcess, free_port, wait_for_health

WORDS = " ".join(f"w{i}" for i in range(17))
PROMPT = f"[[reply:{WORDS}]]"  # role + 17 words + finish + usage = 20 chunks
CONFIG = """
providers:
  - {{name: up, type: openai_compatible, base_url: "{url}/v1", api_key_env: BENCH_KEY, idle_timeout_s: 30,
     models: [{{name: m, context_window: 100000}}]}}
routes:
  default: [up/m]
"""
Once = Callable[[], Awaitable[int]]


async def bare_once(client: openai.AsyncOpenAI) -> int:
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = 0
    async for _ in stream:
        chunks += 1
    return chunks


async def grpc_once(stub: chat_service_pb2_grpc.ChatServiceStub) -> int:
    request = pb.StreamChatRequest(model="up/m", messages=[pb.Message(role=pb.ROLE_USER, content=PROMPT)])
    events = 0
    async for _ in stub.StreamChat(request, timeout=10):
        events += 1
    return events


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def cpu_per_request(once: Once, process: psutil.Process, args: argparse.Namespace) -> float:
    """CPU microseconds `process` spends per request while `args.concurrency` streams run for `args.seconds`."""
    before = cpu_s(process)
    done = await concurrent(once, args.concurrency, args.seconds)
    return (cpu_s(process) - before) / done * 1e6


# --- the floor: a bare grpc.aio StreamChat answering with the gateway's 20 events --------------------------


def floor_events() -> list[pb.StreamChatResponse]:
    started = pb.StreamChatResponse(started=pb.Started(provider="up", model="m", attempt=1))
    deltas = [pb.StreamChatResponse(delta=pb.Delta(text=f" w{i}")) for i in range(17)]
    usage = pb.StreamChatResponse(usage=pb.Usage(input_tokens=20, output_tokens=17))
    done = pb.StreamChatResponse(done=pb.Done(finish_reason=pb.FINISH_REASON_STOP))
    return [started, *deltas, usage, done]


class FloorServicer(chat_service_pb2_grpc.ChatServiceServicer):
    def __init__(self) -> None:
        self.events = floor_events()

    async def StreamChat(self, request: pb.StreamChatRequest, context: grpc.aio.ServicerContext) -> None:
        for event in self.events:
            await context.write(event)


async def serve_floor(port: int, stack: bool) -> None:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    if stack:  # the same servicer inside servicekit's server: its interceptors (counts, gate, drain, decode guard)
        from servicekit.metrics import Registry
        from servicekit.server import Lifecycle, ServerOptions, build_server

        names = ["llmgateway.v1.ChatService"]
        lifecycle = Lifecycle(names)
        add = lambda s: chat_service_pb2_grpc.add_ChatServiceServicer_to_server(FloorServicer(), s)  # noqa: E731
        server = build_server(ServerOptions(), lifecycle, [add], names, metrics=Registry())
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await lifecycle.start(ready=True)
        await server.wait_for_termination()
        return
    server = grpc.aio.server()
    chat_service_pb2_grpc.add_ChatServiceServicer_to_server(FloorServicer(), server)
    checks = health.aio.HealthServicer()
    await checks.set("readiness", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# --- the run -------------------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.0f} us  ({min(values):.0f}-{max(values):.0f})"


async def measure(
    args: argparse.Namespace, url: str, gateway: ServiceProcess, floor_ports: tuple[int, int]
) -> dict[str, list[float]]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-bench", max_retries=0)
    addresses = (gateway.address, *(f"127.0.0.1:{port}" for port in floor_ports))
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    gw_stub, floor_stub, stack_stub = (chat_service_pb2_grpc.ChatServiceStub(c) for c in channels)
    assert await bare_once(client) == 20
    for stub in (gw_stub, floor_stub, stack_stub):
        assert await grpc_once(stub) == 20
    sides: dict[str, tuple[Once, psutil.Process]] = {
        "bare SDK": (lambda: bare_once(client), psutil.Process()),
        "gateway": (lambda: grpc_once(gw_stub), psutil.Process(gateway.proc.pid)),
        "gRPC floor": (lambda: grpc_once(floor_stub), psutil.Process(args.floor_pids[0])),
        "+servicekit": (lambda: grpc_once(stack_stub), psutil.Process(args.floor_pids[1])),
    }
    for once, _ in sides.values():  # warm up connections and code paths
        await concurrent(once, args.concurrency, 1.0)
    figures: dict[str, list[float]] = {name: [] for name in sides}
    for index in range(args.rounds):
        order = list(sides) if index % 2 == 0 else list(reversed(sides))
        for name in order:
            once, process = sides[name]
            figures[name].append(await cpu_per_request(once, process, args))
        print(f"  round {index + 1}: " + ", ".join(f"{n} {figures[n][-1]:.0f} us" for n in sides), flush=True)
    if args.py_spy:
        await profile(args, sides["gateway"][0], gateway.proc.pid, statistics.median(figures["gateway"]))
    for channel in channels:
        await channel.close()
    await client.close()
    return figures


async def profile(args: argparse.Namespace, once: Once, pid: int, per_request_us: float) -> None:
    from bench import cpu_split

    raw = Path(tempfile.mkstemp(prefix="gateway-cpu-", suffix=".txt")[1])
    seconds = max(int(args.seconds * 2), 4)
    record = [str(args.py_spy), "record", "--gil", "-r", "250", "--format", "raw", "-d", str(seconds)]
    spy = await asyncio.create_subprocess_exec(
        *record, "-p", str(pid), "-o", str(raw), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    await concurrent(once, args.concurrency, seconds + 1)
    await spy.wait()
    counts = cpu_split.split(raw.read_text())
    total = sum(counts.values()) or 1
    print(f"\nwhere the gateway's CPU goes (py-spy, {total} samples of its loop thread; raw in {raw})")
    for name, n in counts.most_common():
        print(f"  {name:<58} {n / total:6.1%} {n / total * per_request_us:6.0f} us/request")


def report(args: argparse.Namespace, figures: dict[str, list[float]]) -> None:
    print(f"\nCPU per streamed request (20 chunks), {args.concurrency} streams, {args.rounds} x {args.seconds:g} s")
    for name, values in figures.items():
        print(f"  {name:<12} {spread(values)}")
    bare = figures["bare SDK"]
    ratios = [g / b for g, b in zip(figures["gateway"], bare, strict=True)]
    floors = [f / b for f, b in zip(figures["gRPC floor"], bare, strict=True)]
    stacks = [f / b for f, b in zip(figures["+servicekit"], bare, strict=True)]
    print(f"  gateway / bare SDK, per round: {' '.join(f'{r:.2f}' for r in ratios)}")
    print(f"  gRPC floor / bare SDK, per round: {' '.join(f'{r:.2f}' for r in floors)}")
    print(f"  floor in servicekit's server / bare SDK, per round: {' '.join(f'{r:.2f}' for r in stacks)}")
    target("CPU per streamed request, gateway / bare SDK (median of rounds)", statistics.median(ratios), at_most=0.7)
    print(
        f"  (the bare gRPC server alone is {statistics.median(floors):.2f} of the bare SDK,"
        f" inside servicekit's interceptors {statistics.median(stacks):.2f})"
    )
    save("gateway_cpu", {"concurrency": args.concurrency, "seconds": args.seconds, "cpu_us": figures})


async def _main(args: argparse.Namespace) -> int:
    up_port, floor_ports = free_port(), (free_port(), free_port())
    upstream = psutil.Popen(
        [sys.executable, "-m", "llm_simulator", "--port", str(up_port), "--chunk-delay-ms", "0"],
        stderr=open(os.devnull, "w"),
    )
    floors = [
        psutil.Popen([sys.executable, __file__, flag, str(port)])
        for flag, port in zip(("--floor", "--floor-stack"), floor_ports, strict=True)
    ]
    args.floor_pids = [floor.pid for floor in floors]
    url = f"http://127.0.0.1:{up_port}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(CONFIG.format(url=url))
    env = {**os.environ, "BENCH_KEY": "sk-bench", "LOG_LEVEL": "WARNING"}
    try:
        with ServiceProcess("gateway-service", "--config", config.name, env=env) as gateway:
            await gateway.wait_serving(timeout_s=60)
            for port, proc in zip(floor_ports, floors, strict=True):
                await wait_for_health(f"127.0.0.1:{port}", "readiness", 1, proc=proc, timeout_s=30)
            report(args, await measure(args, url, gateway, floor_ports))
    finally:
        for proc in (upstream, *floors):
            proc.terminate()
            proc.wait(10)
        Path(config.name).unlink()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--py-spy", type=Path, help="a py-spy binary: profile the gateway after the rounds")
    parser.add_argument("--floor", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the floor server's process
    parser.add_argument("--floor-stack", type=int, metavar="PORT", help=argparse.SUPPRESS)  # ... in servicekit's
    args = parser.parse_args()
    if args.floor or args.floor_stack:
        from servicekit.startup import loop_factory

        with asyncio.Runner(loop_factory=loop_factory()) as runner:  # uvloop, as the gateway runs
            runner.run(serve_floor(args.floor or args.floor_stack, stack=bool(args.floor_stack)))
        return 0
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
