"""Chaos: StreamChat success per second while three upstreams flap out of phase (issue #14's run).

    .venv/bin/python bench/chaos.py [--seconds 60] [--callers 20] [--down 2] [--up 2]
                                    [--baseline-src DIR --baseline-label NAME]

Three simulators in this process (llm_simulator/flapping.py: each down `--down` s and up `--up` s, out
of phase, its outages rotating through 503, 429 with Retry-After: 1, a reset after the headers and a
stall after them, so that one is always up), the gateway as its own process (`gateway-service serve`,
default failover settings, first-token timeout 2 s) and `--callers` StreamChat loops in this process.

The baseline is measured in the same run: first the same gateway and callers with steady upstreams,
then the flapping run; with `--baseline-src DIR` the gateway of another checkout (the code before a
change) runs the same flapping schedule too. Prints each run's per-second success (calls started in
that second that answered whole / calls started), the seconds in which no call answered, the figures
tests/gateway/test_chaos.py asserts, and the ratios; saves bench/results/chaos.json and draws
bench/results/chaos.png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.plot import chaos as draw
from bench.results import DIR, load, save
from llm_simulator.chaos import per_second, report, run_chaos
from llm_simulator.flapping import Flapping
from servicekit.procs import ServiceProcess

FIRST_TOKEN_TIMEOUT_S = 2.0
RETRY_AFTER_GRACE_S = 0.25  # see tests/gateway/test_chaos.py


def config_yaml(flapping: Flapping) -> str:
    providers = [
        {
            "name": f"p{n}",
            "type": "openai",
            "base_url": f"{h.base_url}/v1",
            "api_key_env": "SIM_KEY",
            "connect_timeout_s": 1.0,
            "first_token_timeout_s": FIRST_TOKEN_TIMEOUT_S,
            "idle_timeout_s": 2.0,
            "timeout_s": 10.0,
            "models": [{"name": "m", "context_window": 100_000}],
        }
        for n, h in enumerate(flapping.handles)
    ]
    return yaml.safe_dump({"providers": providers, "routes": {"default": [f"p{n}/m" for n in range(len(providers))]}})


async def one_run(args: argparse.Namespace, label: str, *, flap: bool, src: str | None = None) -> dict[str, Any]:
    """One gateway process against fresh upstreams; steady ones unless `flap`."""
    flapping = await Flapping.start(3, down_s=args.down, up_s=args.up)
    if not flap:
        flapping.faults = ("",)  # every "outage" is no fault at all
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        file.write(config_yaml(flapping))
    env = {**os.environ, "SIM_KEY": "sk-sim-chaos", "LOG_LEVEL": "ERROR"}
    security: tuple[str, ...] = ("--insecure-dev",)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
        if "--insecure-dev" not in "".join(p.read_text() for p in Path(src).glob("*/__main__.py")):
            security = ()  # from before servers refused to start without TLS or that flag
    try:
        with ServiceProcess("gateway-service", "--config", file.name, env=env, security=security) as gateway:
            await gateway.wait_serving(timeout_s=60)
            seconds = args.seconds if flap else args.steady_seconds
            calls = await run_chaos(flapping, gateway.address, callers=args.callers, seconds=seconds)
    finally:
        await flapping.close()
        os.unlink(file.name)
    start = flapping.log[0].at if flapping.log else min(c.started for c in calls)
    result = report(flapping, calls, RETRY_AFTER_GRACE_S)
    buckets = per_second(calls, start, int(seconds))
    rates = [ok / started if started else None for started, ok in buckets]  # None: every caller was waiting
    print(f"\n{label}: {result}")
    print("per second (answered / started): " + " ".join("-" if r is None else f"{r:.0%}" for r in rates))
    dead = sum(1 for started, ok in buckets if started and not ok)
    print(f"seconds in which no call answered: {dead} of {len(buckets)}")
    outages = [(c.at - start, c.upstream, c.fault) for c in flapping.log]
    return {
        "label": label,
        "success": result.success,
        "calls": result.calls,
        "dead_seconds": dead,
        "rates": rates,
        "started": [s for s, _ in buckets],
        "outages": outages,
        "calls_per_s": result.calls / seconds,
        "incomplete": result.incomplete,
        "inside_retry_after": len(result.inside_retry_after),
        "longest_stall_wait_s": result.longest_stall_wait_s,
    }


async def main_async(args: argparse.Namespace) -> None:
    steady = await one_run(args, "steady upstreams", flap=False)
    runs = [await one_run(args, "flapping, this gateway", flap=True)]
    if args.baseline_src:
        runs.append(await one_run(args, f"flapping, {args.baseline_label}", flap=True, src=args.baseline_src))
    print()
    for run in runs:
        print(
            f"{run['label']}: success {run['success']:.2%} / steady {steady['success']:.2%} = "
            f"{run['success'] / steady['success']:.3f}; calls/s {run['calls_per_s']:.0f} / steady "
            f"{steady['calls_per_s']:.0f} = {run['calls_per_s'] / steady['calls_per_s']:.2f}; "
            f"{run['dead_seconds']} s without an answer"
        )
    settings = {
        "seconds": args.seconds,
        "callers": args.callers,
        "down_s": args.down,
        "up_s": args.up,
        "first_token_timeout_s": FIRST_TOKEN_TIMEOUT_S,
    }
    data = {"settings": settings, "steady": steady, "runs": runs}
    saved = load(save("chaos", data).stem)
    assert saved is not None
    draw(saved, DIR / "chaos.png")
    print(f"wrote {DIR / 'chaos.json'} and {DIR / 'chaos.png'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="flapping run (default 60)")
    parser.add_argument("--steady-seconds", type=float, default=10.0, help="baseline run with steady upstreams")
    parser.add_argument("--callers", type=int, default=20)
    parser.add_argument("--down", type=float, default=2.0, help="seconds each upstream is down")
    parser.add_argument("--up", type=float, default=2.0, help="seconds each upstream is up")
    parser.add_argument(
        "--baseline-src", help="a checkout whose gateway_service (and servicekit) run the flapping schedule too"
    )
    parser.add_argument("--baseline-label", default="baseline gateway", help="its name in the output and plot")
    args = parser.parse_args()
    if args.baseline_src and not (Path(args.baseline_src) / "gateway_service").is_dir():
        parser.error(f"--baseline-src {args.baseline_src}: no gateway_service/ there")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
