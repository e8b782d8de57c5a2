"""`make run`: the schema service, a local LLM upstream simulator and the gateway, together.

- schema service on 127.0.0.1:50052, on an embedded PostgreSQL under ./.data/postgres
  (or on DATABASE_URL when set), applying migrations at start;
- the upstream simulator on 127.0.0.1:8090 (OpenAI, Anthropic and Gemini wire formats),
  so that streaming and failover can be tried without provider keys;
- the gateway on 127.0.0.1:50051 with deploy/local/gateway.yaml (simulated providers first,
  real ones used when their key variables are set), reporting metrics to the schema service.

Ctrl-C (or SIGTERM) stops all three gracefully.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_ready(address: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    request = health_pb2.HealthCheckRequest(service="readiness")
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}")
            try:
                if stub.Check(request, timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"{address} not ready after {timeout_s}s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schema-port", type=int, default=50052)
    parser.add_argument("--gateway-port", type=int, default=50051)
    parser.add_argument("--simulator-port", type=int, default=8090)
    parser.add_argument("--config", default=str(ROOT / "deploy" / "local" / "gateway.yaml"))
    args = parser.parse_args()

    env = dict(os.environ)
    env["SCHEMA_SERVICE_ADDR"] = f"127.0.0.1:{args.schema_port}"
    env.setdefault("SIMULATOR_URL", f"http://127.0.0.1:{args.simulator_port}")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*command: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(BIN / command[0]), *command[1:]], env=env, cwd=ROOT)
        procs.append(proc)
        return proc

    try:
        schema = start("schema-service", "serve", "--host", "127.0.0.1", "--port", str(args.schema_port))
        start("gateway-service", "simulate", "--host", "127.0.0.1", "--port", str(args.simulator_port))
        wait_ready(f"127.0.0.1:{args.schema_port}", schema)
        gateway = start(
            "gateway-service", "serve", "--config", args.config, "--host", "127.0.0.1", "--port", str(args.gateway_port)
        )
        wait_ready(f"127.0.0.1:{args.gateway_port}", gateway)
        print(
            f"\nready: gateway 127.0.0.1:{args.gateway_port}, schema service 127.0.0.1:{args.schema_port}, "
            f"simulator http://127.0.0.1:{args.simulator_port}\n"
            f"try: grpcurl -plaintext 127.0.0.1:{args.gateway_port} list"
            "\n(see README.md for the walkthrough; Ctrl-C stops everything)\n",
            flush=True,
        )
        # Explicit for both: a shell that starts us in the background leaves SIGINT ignored.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _interrupt)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
