"""`make run`: the schema service, a local LLM upstream simulator and the gateway, together.

- schema service on 127.0.0.1:50052, on an embedded PostgreSQL under ./.data/postgres
  (or on DATABASE_URL when set), applying migrations at start;
- the upstream simulator on 127.0.0.1:8090 (OpenAI, Anthropic, Gemini and Cohere wire formats),
  so that streaming and failover can be tried without provider keys;
- the gateway on 127.0.0.1:50051 with deploy/local/gateway.yaml (simulated providers first,
  real ones used when their key variables are set), reporting metrics and the usage ledger's records
  to the schema service (insecure dev mode lets it call RecordUsage without a token),
  and its OpenAI-compatible HTTP API on 127.0.0.1:8080 (docs/openai.md).

All three run in insecure development mode on purpose (`--insecure-dev`: plaintext, no callers file,
every caller allowed), listening on 127.0.0.1 only; README.md#the-same-with-tls-and-a-token shows a server
with TLS and tokens.
If one of the ports already answers (another `make run`?), nothing is started.

Ctrl-C (or SIGTERM) stops all three gracefully, and so does `kill -INT` of the `make` process: make waits for
its recipe without passing SIGINT on (a terminal's Ctrl-C reaches the whole process group, a `kill` only make),
so this script notices make handling one (MakeInterrupt) and stops as if it had been sent to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from servicekit.procs import BIN, SERVING, NotReady, wait_for_health

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120.0


class Processes:
    """The child processes, started with the terminal as their output and stopped together."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *command: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(BIN / command[0]), *command[1:]], env=self.env, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def any_exited(self) -> bool:
        return any(p.poll() is not None for p in self.procs)

    def stop(self) -> None:
        """SIGTERM in reverse order of start (the gateway drains before the schema service goes)."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class MakeInterrupt:
    """Whether the `make` that runs us was sent SIGINT. GNU make's handler for it (fatal_error_signal) first sets
    SIGINT back to SIG_DFL, then waits for the recipe to end; only SIGTERM is passed on to it. So while make
    catches SIGINT (bit 2 of SigCgt in /proc/PID/status) nothing happened; once it no longer does, it was sent
    one. Off when the parent is not make, when make did not catch SIGINT to begin with (started in the
    background), or without /proc."""

    def __init__(self) -> None:
        self.make = os.getppid()
        self.armed = _comm(self.make) == "make" and _catches_sigint(self.make) is True

    def happened(self) -> bool:
        return self.armed and _catches_sigint(self.make) is False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _catches_sigint(pid: int) -> bool | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), None)
    return None if caught is None else bool(int(caught, 16) & (1 << (signal.SIGINT - 1)))


async def serve(args: argparse.Namespace, procs: Processes) -> int:
    """Start all three, each once the one it needs is ready; run until one of them exits (then 1)."""
    schema_address, gateway_address = f"127.0.0.1:{args.schema_port}", f"127.0.0.1:{args.gateway_port}"
    schema = procs.start(
        "schema-service",
        "serve",
        "--insecure-dev",
        "--embedded",  # used only without DATABASE_URL
        "--host",
        "127.0.0.1",
        "--port",
        str(args.schema_port),
        "--metrics-port",
        str(args.schema_metrics_port),
    )
    # One simulated model is rate limited (3 a minute, stated in its headers) to show headroom: route `limited`.
    procs.start(
        "python",
        "-m",
        "llm_simulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.simulator_port),
        "--rate-limit",
        "requests=3 window=60 model=gpt-4o-mini-3rpm",
    )
    await wait_for_health(schema_address, "readiness", SERVING, proc=schema, timeout_s=READY_TIMEOUT_S)
    gateway = procs.start(
        "gateway-service",
        "serve",
        "--insecure-dev",
        "--config",
        args.config,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.gateway_port),
        "--metrics-port",
        str(args.gateway_metrics_port),
        "--openai-port",
        str(args.openai_port),
    )
    await wait_for_health(gateway_address, "readiness", SERVING, proc=gateway, timeout_s=READY_TIMEOUT_S)
    print(
        f"\nready: gateway {gateway_address}, schema service {schema_address}, "
        f"simulator http://127.0.0.1:{args.simulator_port}\n"
        f"metrics: {_metrics_urls(args)}\n"
        f"OpenAI-compatible API: http://127.0.0.1:{args.openai_port}/v1\n"
        f"try: grpcurl -plaintext {gateway_address} list"
        "\n(see README.md for the walkthrough; Ctrl-C stops everything)\n",
        flush=True,
    )
    while not procs.any_exited():
        await asyncio.sleep(0.5)
    return 1


def _metrics_urls(args: argparse.Namespace) -> str:
    """Where Prometheus can scrape each service; a port of 0 means that endpoint is off."""
    ports = (("gateway", args.gateway_metrics_port), ("schema service", args.schema_metrics_port))
    urls = [f"http://127.0.0.1:{port}/metrics ({name})" for name, port in ports if port]
    return ", ".join(urls) or "off (--gateway-metrics-port / --schema-metrics-port)"


async def run(args: argparse.Namespace, procs: Processes) -> int:
    """`serve` until SIGINT or SIGTERM (0), or until it ends by itself."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Explicit for both: a shell that starts us in the background leaves SIGINT ignored.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    interrupt = MakeInterrupt()
    serving = asyncio.ensure_future(serve(args, procs))
    stopping = asyncio.ensure_future(stop.wait())
    watching = asyncio.ensure_future(_watch(interrupt, stop))
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    watching.cancel()
    if serving.done():
        stopping.cancel()
        return serving.result()
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    return 0


async def _watch(interrupt: MakeInterrupt, stop: asyncio.Event) -> None:
    while interrupt.armed and not interrupt.happened():
        await asyncio.sleep(0.2)
    if interrupt.armed:
        print("make was interrupted: stopping", file=sys.stderr, flush=True)
        stop.set()


def ports_taken(ports: dict[str, int]) -> list[str]:
    """The ports something already listens on, as `what 127.0.0.1:port`."""
    taken = []
    for what, port in ports.items():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            continue
        taken.append(f"{what} 127.0.0.1:{port}")
    return taken


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schema-port", type=int, default=50052)
    parser.add_argument("--gateway-port", type=int, default=50051)
    parser.add_argument("--simulator-port", type=int, default=8090)
    parser.add_argument("--openai-port", type=int, default=8080, help="the gateway's OpenAI-compatible HTTP API")
    parser.add_argument("--gateway-metrics-port", type=int, default=9464, help="Prometheus /metrics (0: off)")
    parser.add_argument("--schema-metrics-port", type=int, default=9465, help="Prometheus /metrics (0: off)")
    parser.add_argument("--config", default=str(ROOT / "deploy" / "local" / "gateway.yaml"))
    args = parser.parse_args()
    ports = {
        "gateway": args.gateway_port,
        "schema service": args.schema_port,
        "simulator": args.simulator_port,
        "gateway OpenAI API": args.openai_port,
        "gateway metrics": args.gateway_metrics_port,
        "schema service metrics": args.schema_metrics_port,
    }
    taken = ports_taken({what: port for what, port in ports.items() if port})
    if taken:
        print(
            f"not started: already in use: {', '.join(taken)}; an instance is probably running already "
            "(stop it, or pick other ports with --gateway-port, --schema-port, ...)",
            file=sys.stderr,
            flush=True,
        )
        return 1

    env = dict(os.environ)
    env["SCHEMA_SERVICE_ADDR"] = f"127.0.0.1:{args.schema_port}"
    env.setdefault("SIMULATOR_URL", f"http://127.0.0.1:{args.simulator_port}")
    procs = Processes(env)
    try:
        return asyncio.run(run(args, procs))
    except NotReady as exc:
        print(f"not started: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        procs.stop()


if __name__ == "__main__":
    sys.exit(main())
