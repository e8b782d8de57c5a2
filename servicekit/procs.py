"""Run the services as real processes, the way operators do, and wait on their health.

Used by the tests, the benchmarks and `make run`; nothing here is needed to serve.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServiceProcess:
    """A `schema-service` or `gateway-service` subprocess listening on 127.0.0.1:port."""

    def __init__(self, command: str, *args: str, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix=f"{command}-", suffix=".log", delete=False)  # noqa: SIM115
        full_env = dict(os.environ) if env is None else env
        self.proc = subprocess.Popen(
            [str(BIN / command), "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

    def output(self) -> str:
        return Path(self.log.name).read_text()

    async def health(self, service: str, *, timeout_s: float = 1.0) -> int:
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
            status: int = response.status
            return status

    async def wait_for(self, service: str, status: int, *, timeout_s: float = 30.0) -> None:
        """Poll the health service until `service` reports `status` (the process must stay up)."""
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited with {self.proc.returncode}:\n{self.output()}")
            try:
                last = await self.health(service)
                if last == status:
                    return
            except grpc.aio.AioRpcError as exc:
                last = exc.code()
            await asyncio.sleep(0.1)
        raise AssertionError(f"{service} never became {status} (last {last}):\n{self.output()}")

    async def wait_serving(self, service: str = "readiness", *, timeout_s: float = 30.0) -> None:
        await self.wait_for(service, health_pb2.HealthCheckResponse.SERVING, timeout_s=timeout_s)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, *, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"process did not exit within {timeout_s}s:\n{self.output()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        os.unlink(self.log.name)
