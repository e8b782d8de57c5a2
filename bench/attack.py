"""RSS of both servers under the slow-drip and hog attacks of issue #18 (target: under 300 MB each).

Both servers run as processes the way operators run them, with a callers file (plaintext here, so the
raw HTTP/2 client needs no certificates; --insecure-dev allows the missing TLS). Each attack opens
`--calls` calls over connections of 50, each announcing a message of the server's largest size and sending
all of it but the last byte, holds them `--hold` seconds, and reports the server's RSS before, at its
peak while held, and after the connection closed:

    slow drip     no credentials (the gate refuses each on its headers)
    hog           one caller's valid token (its per-caller slots hold; the rest are refused)

    .venv/bin/python bench/attack.py [--calls 128] [--hold 5] [--bin DIR]

`--bin` runs the servers of another checkout's venv (DIR/schema-service, DIR/gateway-service), which is
how the figures before the gate were taken. Needs DATABASE_URL (the schema service's PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_simulator.h2client import H2Client
from servicekit.procs import BIN, free_port, wait_for_health

TOKEN = "bench-attack-token"
GATEWAY_CONFIG = """
providers:
  - {name: p, type: openai_compatible, base_url: "http://127.0.0.1:9/v1", api_key_env: BENCH_KEY,
     models: [{name: m, context_window: 100000}]}
routes:
  default: [p/m]
"""
TARGETS = {
    # server -> (the method attacked, the largest message it reads)
    "schema-service": ("/schemaservice.v1.MetricsService/WriteMetrics", 17 * 1024 * 1024),
    "gateway-service": ("/llmgateway.v1.ChatService/StreamChat", 4 * 1024 * 1024),
}
PER_CONNECTION = 50  # under the servers' 100 streams a connection
ROLES = "[chat, providers.read, metrics.write, metrics.read]"


@dataclass
class Figures:
    before_mib: float
    peak_mib: float
    after_mib: float
    answered: int


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def start(command: str, folder: Path, bin_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    callers = folder / "callers.yaml"
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    callers.write_text(f'callers:\n  - {{name: hog, token_sha256: "{digest}", roles: {ROLES}}}\n...\n')
    port = free_port()
    args = ["--callers", str(callers), "--insecure-dev", "--host", "127.0.0.1", "--port", str(port)]
    if command == "gateway-service":
        config = folder / "gateway.yaml"
        config.write_text(GATEWAY_CONFIG)
        args += ["--config", str(config)]
    env = {**os.environ, "BENCH_KEY": "k"}
    log = (folder / f"{command}.log").open("wb")
    proc = subprocess.Popen([str(bin_dir / command), "serve", *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, port


async def attack(pid: int, port: int, method: str, size: int, calls: int, hold_s: float, token: str | None) -> Figures:
    before = rss_mib(pid)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    clients = [await H2Client.connect("127.0.0.1", port) for _ in range(0, calls, PER_CONNECTION)]
    streams = [
        (c, c.drip(method, size, size - 1, metadata)) for i in range(calls) for c in [clients[i // PER_CONNECTION]]
    ]
    peak = before
    loop = asyncio.get_running_loop()
    end = loop.time() + hold_s
    while loop.time() < end:
        peak = max(peak, rss_mib(pid))
        await asyncio.sleep(0.1)
    answered = sum(c.streams[s].status is not None for c, s in streams)
    for client in clients:
        await client.close()
    await asyncio.sleep(1.0)  # the server's side of the closed connection is torn down
    return Figures(before, peak, rss_mib(pid), answered)


async def bench(args: argparse.Namespace) -> None:
    bin_dir = Path(args.bin) if args.bin else BIN
    print(f"{'server':16} {'attack':10} {'calls':>5} {'answered':>8} {'RSS before':>10} {'peak':>8} {'after':>8}")
    for command, (method, size) in TARGETS.items():
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = start(command, Path(tmp), bin_dir)
            try:
                await wait_for_health(f"127.0.0.1:{port}", "", 1, proc=proc, timeout_s=60)
                for name, token in (("slow drip", None), ("hog", TOKEN)):
                    f = await attack(proc.pid, port, method, size, args.calls, args.hold, token)
                    verdict = "ok" if f.peak_mib < 300 else "OVER 300 MB"
                    print(
                        f"{command:16} {name:10} {args.calls:>5} {f.answered:>8} {f.before_mib:>7.0f} MiB"
                        f" {f.peak_mib:>4.0f} MiB {f.after_mib:>4.0f} MiB  {verdict}"
                    )
            finally:
                proc.terminate()
                proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=128, help="calls per attack, over connections of 50")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds the calls are held open")
    parser.add_argument("--bin", help="the venv bin folder whose servers to attack (default: this one)")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
