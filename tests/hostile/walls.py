"""A server with both services' methods and roles behind the real gate, for attacks on its walls.

The base servicers answer UNIMPLEMENTED: a call that got through the gate ends with that code. The
server reads messages of up to 17 MiB, as the schema service does, so a slow drip can announce 16 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from servicekit.concurrency import Limits
from servicekit.metrics import Registry
from servicekit.security import Security, listen
from servicekit.server import Lifecycle, ServerOptions, build_server
from servicekit.tls import TlsFiles
from tests.servicekit.conftest import ROLES, SERVICE_NAMES, add_base_servicers, callers_yaml, sha256

WRITE_METRICS = "/schemaservice.v1.MetricsService/WriteMetrics"
STREAM_CHAT = "/llmgateway.v1.ChatService/StreamChat"
SIXTEEN_MIB = 16 * 1024 * 1024
HOG, OTHER = "hog-token", "other-token"
CERT_HOG = "cert-hog"  # the common name of the hog's client certificate
KINDS = {STREAM_CHAT: "chats"}


def hostile_callers() -> str:
    """The servicekit callers plus callers holding every role: the hog and another, and a hog by certificate."""
    roles = ", ".join(sorted(set(ROLES.values())))
    return callers_yaml(
        [
            f'  - {{name: hog, token_sha256: "{sha256(HOG)}", roles: [{roles}]}}',
            f'  - {{name: other, token_sha256: "{sha256(OTHER)}", roles: [{roles}]}}',
            f'  - {{name: cert-hog, tls_subject: "CN={CERT_HOG}", roles: [{roles}]}}',
        ]
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Walled:
    port: int
    lifecycle: Lifecycle
    metrics: Registry

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def refused(self, kind: str, scope: str, caller: str) -> float:
        labels = {"kind": kind, "scope": scope, "caller": caller}
        return self.metrics.registry.get_sample_value("grpc_server_concurrency_refused_total", labels) or 0.0


@contextlib.asynccontextmanager
async def walled_server(
    folder: Path, limits: Limits | None = None, options: ServerOptions | None = None, tls: TlsFiles | None = None
) -> AsyncIterator[Walled]:
    """A server checking `hostile_callers()`, with `limits` (small ones make the tests fast); plaintext, or TLS
    with the `tls` files (mTLS when they name a client CA)."""
    callers = folder / "callers.yaml"
    callers.write_text(hostile_callers())
    if tls is None:
        security = Security(insecure_dev=True, callers=callers)
    else:
        security = Security(tls_cert=tls.cert, tls_key=tls.key, tls_client_ca=tls.client_ca, callers=callers)
    lifecycle, metrics = Lifecycle(SERVICE_NAMES), Registry()
    limits = limits or Limits(max_calls=8, max_calls_per_caller=4, max_streams=8, max_streams_per_caller=2)
    server = build_server(
        options or ServerOptions(max_message_bytes=17 * 1024 * 1024),
        lifecycle,
        [add_base_servicers],
        SERVICE_NAMES,
        metrics=metrics,
        security=security,
        roles=ROLES,
        limits=limits,
        kinds=KINDS,
    )
    port = listen(server, "127.0.0.1", 0, security)
    await lifecycle.start(ready=True)
    await server.start()
    try:
        yield Walled(port, lifecycle, metrics)
    finally:
        await server.stop(0)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for state the server changes on its own loop (a slot taken when headers were read)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def call(address: str, method: str, metadata: tuple[tuple[str, str], ...]) -> grpc.aio.AioRpcError:
    """One call of `method` with an empty request; the error it ends with."""
    async with grpc.aio.insecure_channel(address) as channel:
        multicallable = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            await multicallable(b"", metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc
    raise AssertionError(f"{method} succeeded")
