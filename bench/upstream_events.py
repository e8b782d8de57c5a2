"""How long one large, legitimate SSE event holds the gateway's event loop, per SDK and HTTP stack.

    .venv/bin/python bench/upstream_events.py [--sizes 65536,262144,1048576,3000000] [--rounds 5]

A local upstream (aiohttp.web) answers each request with a whole valid streamed answer whose one text
event is SIZE bytes, in each wire format (the simulator's). The real adapter reads it while a ticker
task on the same loop wakes every millisecond; the longest the ticker was late is the longest the loop
was held. The SDKs parse each event's JSON (and build their objects) inside their stream iterators, on
the loop: no public API of theirs lets it move elsewhere, so the stall grows with the event, and the event
cap (`max_sse_event_bytes`, 1 MiB by default, 3 MiB at most) is what bounds it. Each stall is printed
beside `json.loads` of the same event in the same run (the baseline: the least any parse of it costs) and
as a ratio to it. Best of --rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from dataclasses import replace

from aiohttp import web

from bench.results import save
from gateway_service.domain.failures import ProviderError
from gateway_service.domain.request import ChatRequest, Message, Role
from gateway_service.providers import create_adapter
from gateway_service.providers.base import ProviderConfig
from gateway_service.providers.http import TransportSettings
from gateway_service.providers.streaming import provider_deadlines
from llm_simulator import wire_anthropic, wire_cohere, wire_gemini, wire_openai
from llm_simulator.plan import Plan, Prompt

WIRES = {"openai_compatible": wire_openai, "anthropic": wire_anthropic, "gemini": wire_gemini, "cohere": wire_cohere}
STACKS = ("aiohttp", "httpx")
CAP = 3 << 20  # the largest max_sse_line_bytes / max_sse_event_bytes the config allows


def frames(kind: str, text: str) -> list[bytes]:
    api = "openai" if kind.startswith("openai") else kind
    prompt = Prompt(api=api, model="m", stream=True, messages=[("user", "hi")], include_usage=True)
    plan = Plan(reasoning=[], text=[text], calls=[], finish="stop", input_tokens=1, output_tokens=1)
    return [frame.data for frame in WIRES[kind].frames(plan, prompt, "req")]


def largest_payload(body: list[bytes]) -> bytes:
    """The JSON of the largest event (its `data:` line)."""
    event = max(body, key=len)
    return next(line for line in event.split(b"\n") if line.startswith(b"data:"))[5:].strip()


async def stall(kind: str, stack: str, port: int) -> float | None:
    """Seconds the loop was held at most while one adapter read the answer; None if the attempt failed (the
    cohere SDK refuses a line over 1 MiB itself)."""
    root = f"http://127.0.0.1:{port}" + ("/v1" if kind.startswith("openai") else "")
    config = ProviderConfig(kind, kind, root, "sk-bench-0123456789", api_version="v1beta" if kind == "gemini" else None)
    transport = TransportSettings(http_client=stack, max_sse_line_bytes=CAP, max_sse_event_bytes=CAP)
    adapter = create_adapter(replace(config, transport=transport))
    loop, late = asyncio.get_running_loop(), 0.0

    async def tick() -> None:
        nonlocal late
        while True:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            late = max(late, loop.time() - due)

    request = ChatRequest(model="m", messages=(Message(Role.USER, "hi"),), request_id="bench")
    ticker = loop.create_task(tick())
    try:
        await asyncio.sleep(0.01)
        late = 0.0
        async for _ in adapter.stream(request, "m", deadlines=provider_deadlines(adapter.config, 30.0)):
            pass
    except ProviderError as error:
        print(f"  {kind} {stack}: {error}")
        return None
    finally:
        ticker.cancel()
        await adapter.aclose()
    return late


async def serve(body: bytes) -> tuple[web.AppRunner, int]:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/event-stream")

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    return runner, int(sock.getsockname()[1])


async def main(sizes: list[int], rounds: int) -> None:
    results = []
    print(f"{'kind':<18} {'stack':<8} {'event':>10} {'json.loads':>11} {'loop held':>10} {'ratio':>6}")
    for kind in WIRES:
        for size in sizes:
            body = frames(kind, "x" * (size - 200))
            payload = largest_payload(body)
            parse = min(_parse_s(payload) for _ in range(rounds))
            runner, port = await serve(b"".join(body))
            try:
                for stack in STACKS:
                    stalls = [await stall(kind, stack, port) for _ in range(rounds)]
                    if None in stalls:
                        continue
                    held = min(s for s in stalls if s is not None)
                    row = {"kind": kind, "stack": stack, "event_bytes": len(payload), "json_ms": parse * 1e3}
                    results.append({**row, "held_ms": held * 1e3})
                    print(
                        f"{kind:<18} {stack:<8} {len(payload):>10,} {parse * 1e3:>9.2f}ms {held * 1e3:>8.2f}ms "
                        f"{held / parse:>5.1f}x"
                    )
            finally:
                await runner.cleanup()
    save("upstream_events", {"rounds": rounds, "results": results})


def _parse_s(payload: bytes) -> float:
    start = time.perf_counter()
    json.loads(payload)
    return time.perf_counter() - start


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="65536,262144,1048576,3000000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main([int(s) for s in args.sizes.split(",")], args.rounds))
