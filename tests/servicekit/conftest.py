"""A TLS server with both services' methods and roles, in front of the generated base servicers.

Authentication runs before any servicer, so a call that gets past it ends UNIMPLEMENTED (the base
servicers' answer): that is "allowed" here, with no database or provider behind it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory

from gateway_service import server as gateway_server
from llmgateway.v1 import chat_service_pb2_grpc, provider_service_pb2_grpc
from schema_service import server as schema_server
from schemaservice.v1 import metrics_service_pb2_grpc, migration_service_pb2_grpc, usage_service_pb2_grpc
from servicekit.security import Security, listen
from servicekit.server import Lifecycle, ServerOptions, build_server
from servicekit.tls import TlsFiles
from tests.servicekit.certs import Authority

ROLES = {**gateway_server.ROLES, **schema_server.ROLES}
SERVICE_NAMES = (*gateway_server.SERVICE_NAMES, *schema_server.SERVICE_NAMES)
ALL_ROLES = sorted(set(ROLES.values()))


def token_of(role: str) -> str:
    return f"token-for-{role}"


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def callers_yaml(more: Sequence[str] = ()) -> str:
    """Per role: a token caller and a certificate caller holding only it, and two holding all the others; then the
    entries `more`, before the file's last line."""
    lines = ["callers:", '  - {name: web-frontend, tls_subject: "CN=web-frontend,O=Example", roles: [chat]}']
    for role in ALL_ROLES:
        others = [r for r in ALL_ROLES if r != role]
        lines += [
            f'  - {{name: only-{role}, token_sha256: "{sha256(token_of(role))}", roles: [{role}]}}',
            f'  - {{name: cert-{role}, tls_subject: "CN=only-{role}", roles: [{role}]}}',
            f'  - {{name: all-but-{role}, token_sha256: "{sha256("but-" + role)}", roles: [{", ".join(others)}]}}',
            f'  - {{name: cert-all-but-{role}, tls_subject: "CN=all-but-{role}", roles: [{", ".join(others)}]}}',
        ]
    return "\n".join([*lines, *more, "..."]) + "\n"


@dataclass
class Pki:
    folder: Path
    ca: Authority
    ca_file: Path
    server: TlsFiles

    def client(
        self, common_name: str, authority: Authority | None = None, organization: str | None = None
    ) -> grpc.ChannelCredentials:
        pem = (authority or self.ca).issue(common_name, server=False, organization=organization)
        return grpc.ssl_channel_credentials(self.ca.pem, pem.key, pem.cert)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority()
    cert, key = ca.issue("server", server=True).write(folder, "server")
    ca_file = ca.write(folder / "ca.crt")
    yield Pki(folder, ca, ca_file, TlsFiles(cert, key, ca_file))


def add_base_servicers(server: grpc.aio.Server) -> None:
    chat_service_pb2_grpc.add_ChatServiceServicer_to_server(chat_service_pb2_grpc.ChatServiceServicer(), server)
    provider_service_pb2_grpc.add_ProviderServiceServicer_to_server(
        provider_service_pb2_grpc.ProviderServiceServicer(), server
    )
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
        metrics_service_pb2_grpc.MetricsServiceServicer(), server
    )
    migration_service_pb2_grpc.add_MigrationServiceServicer_to_server(
        migration_service_pb2_grpc.MigrationServiceServicer(), server
    )
    usage_service_pb2_grpc.add_UsageServiceServicer_to_server(usage_service_pb2_grpc.UsageServiceServicer(), server)


async def start(
    security: Security, lifecycle: Lifecycle | None = None, options: ServerOptions | None = None
) -> tuple[grpc.aio.Server, int]:
    """A started server of the base servicers with `security`, on 127.0.0.1; and its port."""
    lifecycle = lifecycle or Lifecycle(SERVICE_NAMES)
    server = build_server(
        options or ServerOptions(), lifecycle, [add_base_servicers], SERVICE_NAMES, security=security, roles=ROLES
    )
    port = listen(server, "127.0.0.1", 0, security)
    await lifecycle.start(ready=True)
    await server.start()
    return server, port


@pytest.fixture(scope="module")
async def auth_port(pki: Pki) -> AsyncIterator[int]:
    """Port of a TLS server (mTLS: client certificates required) checking the callers of `callers_yaml()`."""
    callers = pki.folder / "callers.yaml"
    callers.write_text(callers_yaml())
    files = pki.server
    server, port = await start(
        Security(tls_cert=files.cert, tls_key=files.key, tls_client_ca=files.client_ca, callers=callers)
    )
    yield port
    await server.stop(0)


def request_class(method: str) -> type:
    """The request message class of `/pkg.Service/Method`, from the generated descriptors."""
    service, name = method.lstrip("/").split("/")
    descriptor = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    return message_factory.GetMessageClass(descriptor.input_type)  # type: ignore[no-any-return]


async def invoke(
    channel: grpc.aio.Channel, method: str, metadata: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.AioRpcError:
    """Call `method` with an empty request; the error it ends with (every call here ends with one)."""
    service, name = method.lstrip("/").split("/")
    descriptor = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    request = request_class(method)()
    kind = (
        ("stream" if descriptor.client_streaming else "unary")
        + "_"
        + ("stream" if descriptor.server_streaming else "unary")
    )
    multicallable = getattr(channel, kind)(
        method, request_serializer=lambda m: m.SerializeToString(), response_deserializer=lambda b: b
    )
    argument = iter([request]) if descriptor.client_streaming else request
    try:
        call = multicallable(argument, metadata=metadata, timeout=30)  # generous: the machine may be busy
        if descriptor.server_streaming:
            async for _ in call:
                pass
        else:
            await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError(f"{method} succeeded on a base servicer")
