"""What a StreamChat write costs, rung by rung from a bare grpc.aio server to the gateway.

    .venv/bin/python bench/write_ladder.py [--rounds 3] [--seconds 3] [--concurrency 20] [--rungs a,b,...]

Each rung is a server process answering StreamChat with the gateway's 20 events; the rungs add one thing
at a time. The figure is the server process's CPU (user + system, /proc, all its threads) per request while
`--concurrency` callers stream for `--seconds`, median over rounds that alternate the rungs' order, and the
share of it taken by threads other than the event loop's (gRPC's poller and event-engine threads):

  floor          prebuilt events written back to back (uvloop)
  floor-asyncio  the same on asyncio's own loop
  relay          one upstream stream read with aiohttp (the simulator, 20 SSE events), a prebuilt event written per
                 SSE event as it arrives: the loop serves an HTTP client between writes, as the gateway's does
  relay-2        the same upstream stream, only the first and the last event written (the rest read and dropped):
                 relay minus relay-2, over 18, is the cost of one write beside a live upstream
  sdk            the openai SDK's stream (the gateway's aiohttp-backed client) instead of raw aiohttp, a write per chunk
  sdk-2          the same, two writes
  gateway        the real gateway (gateway-service, one openai_compatible provider)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc
import psutil

from bench.gateway_cpu import CONFIG, PROMPT, floor_events, grpc_once
from bench.gateway_overhead import concurrent
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from servicekit.procs import ServiceProcess, free_port, wait_for_health

RUNGS = ("floor", "floor-asyncio", "relay", "relay-2", "sdk", "sdk-2", "gateway")


class RungServicer(chat_service_pb2_grpc.ChatServiceServicer):
    def __init__(self, rung: str, upstream: str) -> None:
        self.rung, self.upstream = rung, upstream
        self.events = floor_events()
        self.session: object = None
        self.client: object = None

    async def StreamChat(self, request: pb.StreamChatRequest, context: grpc.aio.ServicerContext) -> None:
        if self.rung.startswith("floor"):
            for event in self.events:
                await context.write(event)
            return
        every = not self.rung.endswith("-2")
        stream = self._sdk() if self.rung.startswith("sdk") else self._aiohttp()
        last = len(self.events) - 1
        index = 0
        async for _ in stream:
            if every or index in (0, last):
                await context.write(self.events[min(index, last)])
            index += 1
        if not every and index - 1 != last:
            await context.write(self.events[last])

    async def _aiohttp(self):  # type: ignore[no-untyped-def]
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession()
        body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
        body["messages"] = [{"role": "user", "content": PROMPT}]
        async with self.session.post(f"{self.upstream}/v1/chat/completions", json=body) as response:  # type: ignore[attr-defined]
            async for line in response.content:
                if line.startswith(b"data: {"):
                    yield line

    async def _sdk(self):  # type: ignore[no-untyped-def]
        import openai

        if self.client is None:
            self.client = openai.AsyncOpenAI(
                base_url=f"{self.upstream}/v1", api_key="sk", max_retries=0, http_client=openai.DefaultAioHttpClient()
            )
        stream = await self.client.chat.completions.create(  # type: ignore[attr-defined]
            model="m",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            yield chunk


async def serve(rung: str, port: int, upstream: str) -> None:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.aio.server()
    chat_service_pb2_grpc.add_ChatServiceServicer_to_server(RungServicer(rung, upstream), server)
    checks = health.aio.HealthServicer()
    await checks.set("readiness", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def cpu(process: psutil.Process) -> tuple[float, float, float]:
    """(process CPU s, its system (kernel) CPU s, CPU s of its threads other than the main one)."""
    times = process.cpu_times()
    main = process.pid
    others = sum(t.user_time + t.system_time for t in process.threads() if t.id != main)
    return float(times.user + times.system), float(times.system), float(others)


async def measure(
    stub: chat_service_pb2_grpc.ChatServiceStub, process: psutil.Process, args: argparse.Namespace
) -> tuple[float, float, float]:
    before = cpu(process)
    done = await concurrent(lambda: grpc_once(stub), args.concurrency, args.seconds)
    after = cpu(process)
    return tuple((a - b) / done * 1e6 for a, b in zip(after, before, strict=True))  # type: ignore[return-value]


async def _main(args: argparse.Namespace) -> int:
    rungs = args.rungs.split(",")
    up_port = free_port()
    upstream = psutil.Popen(
        [sys.executable, "-m", "llm_simulator", "--port", str(up_port), "--chunk-delay-ms", "0"],
        stderr=open(os.devnull, "w"),
    )
    url = f"http://127.0.0.1:{up_port}"
    procs: dict[str, tuple[psutil.Process, str]] = {}
    servers: list[psutil.Popen] = []
    gateway: ServiceProcess | None = None
    config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    config.write(CONFIG.format(url=url))
    config.close()
    try:
        for rung in rungs:
            if rung == "gateway":
                env = {**os.environ, "BENCH_KEY": "sk-bench", "LOG_LEVEL": "WARNING"}
                gateway = ServiceProcess("gateway-service", "--config", config.name, env=env)
                gateway.__enter__()
                await gateway.wait_serving(timeout_s=60)
                procs[rung] = (psutil.Process(gateway.proc.pid), gateway.address)
                continue
            port = free_port()
            proc = psutil.Popen([sys.executable, __file__, "--serve", rung, "--port", str(port), "--upstream", url])
            servers.append(proc)
            await wait_for_health(f"127.0.0.1:{port}", "readiness", 1, proc=proc, timeout_s=30)
            procs[rung] = (psutil.Process(proc.pid), f"127.0.0.1:{port}")
        channels = {rung: grpc.aio.insecure_channel(address) for rung, (_, address) in procs.items()}
        stubs = {rung: chat_service_pb2_grpc.ChatServiceStub(c) for rung, c in channels.items()}
        for rung, stub in stubs.items():
            assert await grpc_once(stub) == (2 if rung.endswith("-2") else 20), rung
            await concurrent(lambda s=stub: grpc_once(s), args.concurrency, 1.0)
        figures: dict[str, list[tuple[float, float, float]]] = {rung: [] for rung in rungs}
        for index in range(args.rounds):
            order = rungs if index % 2 == 0 else list(reversed(rungs))
            for rung in order:
                figures[rung].append(await measure(stubs[rung], procs[rung][0], args))
            print(f"  round {index + 1}: " + ", ".join(f"{r} {figures[r][-1][0]:.0f}" for r in rungs), flush=True)
        print(f"\nserver CPU per request (20 events), {args.concurrency} streams, load {os.getloadavg()[0]:.1f}")
        for rung in rungs:
            total = statistics.median(f[0] for f in figures[rung])
            kernel = statistics.median(f[1] for f in figures[rung])
            others = statistics.median(f[2] for f in figures[rung])
            print(f"  {rung:<14} {total:7.0f} us  (kernel {kernel:5.0f} us; others {others:5.0f} us)")
        for full, two in (("relay", "relay-2"), ("sdk", "sdk-2")):
            if full in figures and two in figures:
                diff = statistics.median(f[0] for f in figures[full]) - statistics.median(f[0] for f in figures[two])
                print(f"  one write beside {full}: {diff / 18:.0f} us")
        for channel in channels.values():
            await channel.close()
    finally:
        for proc in (upstream, *servers):
            proc.terminate()
            proc.wait(10)
        if gateway is not None:
            gateway.__exit__(None, None, None)
        Path(config.name).unlink()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rungs", default=",".join(RUNGS))
    parser.add_argument("--serve", choices=RUNGS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        factory: Callable[[], asyncio.AbstractEventLoop] | None = None
        if args.serve != "floor-asyncio":
            from servicekit.startup import loop_factory

            factory = loop_factory()
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(args.serve, args.port, args.upstream))
        return 0
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
