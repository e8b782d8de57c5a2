"""Micro-benchmark: one stream's per-chunk deadline, gateway_service.providers.watchdog against asyncio's own timeouts.

    .venv/bin/python bench/watchdog.py [--chunks 30000] [--rounds 15]

A stream bounds every read by a deadline that moves after each chunk (the idle timeout). Each way below
bounds the same N awaits, each of a future a loop callback resolves (how a chunk arrives):
  bare          `await fut`, no deadline: the baseline every figure is divided by
  watchdog      Watchdog.wait(fut, when): one timer for the whole stream, moved by storing a float
  timeout_at    `async with asyncio.timeout_at(when)` around each await: a Timeout and a timer each time
  reschedule    one asyncio.Timeout for the whole stream, `cm.reschedule(when)` before each await; only
                usable when one task does every read (the gateway's first read runs in a task of its
                own, so the chunk reads move between tasks)
Best of --rounds, in ns per chunk, on asyncio's loop and on uvloop (what `gateway-service serve` runs on).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

from bench.results import save
from gateway_service.providers.watchdog import Watchdog

Way = Callable[[int], Awaitable[None]]
IDLE_S = 30.0


def _chunk(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    fut = loop.create_future()
    loop.call_soon(fut.set_result, None)
    return fut


async def bare(chunks: int) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(chunks):
        await _chunk(loop)


async def watchdog(chunks: int) -> None:
    loop = asyncio.get_running_loop()
    dog = Watchdog(loop)
    try:
        for _ in range(chunks):
            await dog.wait(_chunk(loop), loop.time() + IDLE_S)
    finally:
        dog.close()


async def timeout_at(chunks: int) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(chunks):
        async with asyncio.timeout_at(loop.time() + IDLE_S):
            await _chunk(loop)


async def reschedule(chunks: int) -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as cm:
        for _ in range(chunks):
            cm.reschedule(loop.time() + IDLE_S)
            await _chunk(loop)


WAYS: dict[str, Way] = {"bare": bare, "watchdog": watchdog, "timeout_at": timeout_at, "reschedule": reschedule}


def measure(loop_factory: Callable[[], asyncio.AbstractEventLoop], chunks: int, rounds: int) -> dict[str, float]:
    """ns per chunk, best of `rounds`, the ways interleaved so that drift in the machine hits them all alike."""
    best = {name: float("inf") for name in WAYS}
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        for way in WAYS.values():  # warm-up, not counted
            runner.run(way(chunks // 10))
        for _ in range(rounds):
            for name, way in WAYS.items():
                start = time.perf_counter_ns()
                runner.run(way(chunks))
                best[name] = min(best[name], (time.perf_counter_ns() - start) / chunks)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop

        loops["uvloop"] = uvloop.new_event_loop
    except ImportError:
        pass
    saved: dict[str, dict[str, float]] = {}
    for loop_name, factory in loops.items():
        figures = saved[loop_name] = measure(factory, args.chunks, args.rounds)
        base = figures["bare"]
        print(f"{loop_name}: {args.chunks} chunks, best of {args.rounds}")
        for name, ns in figures.items():
            extra = ns - base
            print(f"  {name:<11} {ns:8.0f} ns/chunk  x{ns / base:5.2f} of bare  (+{extra:5.0f} ns for the deadline)")
        for other in ("timeout_at", "reschedule"):
            print(f"  watchdog per chunk: x{figures['watchdog'] / figures[other]:.2f} of {other}'s")
    save("watchdog", {"chunks": args.chunks, "rounds": args.rounds, "ns_per_chunk": saved})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
