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
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BIN = Path(sys.executable).parent
SERVING = health_pb2.HealthCheckResponse.SERVING


class NotReady(Exception):
    """A process exited, or its health never reported the status waited for."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def check_health(address: str, service: str, *, timeout_s: float = 1.0) -> int:
    """One health Check of `service` at `address`; a fresh channel, so no reconnect backoff carries over."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        status: int = response.status
        return status


async def wait_for_health(
    address: str, service: str, status: int, *, proc: subprocess.Popen[bytes], timeout_s: float = 30.0
) -> None:
    """Poll the health service at `address` until `service` reports `status`; NotReady if `proc` exits first."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NotReady(f"the process serving {address} exited with {proc.returncode}")
        try:
            last = await check_health(address, service)
            if last == status:
                return
        except grpc.aio.AioRpcError as exc:
            last = exc.code()
        await asyncio.sleep(0.1)
    raise NotReady(f"{service} at {address} never became {status} in {timeout_s} s (last {last})")


class ServiceProcess:
    """A `schema-service` or `gateway-service` subprocess listening on 127.0.0.1:port."""

    def __init__(
        self,
        command: str,
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        security: Sequence[str] = ("--insecure-dev",),
        health_port: int | None = None,
    ) -> None:
        """`security` are the flags saying how callers are checked: plaintext, anyone, unless told otherwise.

        With `health_port` the server also serves Health there in plaintext, and that is where it is polled
        (a TLS server's own port would need the client's certificates).
        """
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.health_address = self.address if health_port is None else f"127.0.0.1:{health_port}"
        if health_port is not None:
            args = ("--health-port", str(health_port), *args)
        self.log = tempfile.NamedTemporaryFile(prefix=f"{command}-", suffix=".log", delete=False)
        full_env = dict(os.environ) if env is None else env
        self.proc = subprocess.Popen(
            [str(BIN / command), "serve", "--host", "127.0.0.1", "--port", str(self.port), *security, *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

    def output(self) -> str:
        return Path(self.log.name).read_text()

    async def health(self, service: str, *, timeout_s: float = 1.0) -> int:
        return await check_health(self.health_address, service, timeout_s=timeout_s)

    async def wait_for(self, service: str, status: int, *, timeout_s: float = 30.0) -> None:
        """Poll the health service until `service` reports `status` (the process must stay up)."""
        try:
            await wait_for_health(self.health_address, service, status, proc=self.proc, timeout_s=timeout_s)
        except NotReady as exc:
            raise AssertionError(f"{exc}:\n{self.output()}") from None

    async def wait_serving(self, service: str = "readiness", *, timeout_s: float = 30.0) -> None:
        await self.wait_for(service, SERVING, timeout_s=timeout_s)

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
