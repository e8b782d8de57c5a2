"""Who may call: every method of both services, allowed with its role and refused without, by token and by mTLS."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from gateway_service.server import ROLES as GATEWAY_ROLES
from llmgateway.v1 import chat_service_pb2, provider_service_pb2
from schema_service.server import ROLES as SCHEMA_ROLES
from schemaservice.v1 import metrics_service_pb2, migration_service_pb2, usage_service_pb2
from tests.servicekit.certs import Authority
from tests.servicekit.conftest import ALL_ROLES, ROLES, Pki, invoke, token_of

pytestmark = pytest.mark.timeout(60)

EXPECTED_ROLES = {
    "/llmgateway.v1.ChatService/StreamChat": "chat",
    "/llmgateway.v1.ChatService/Chat": "chat",
    "/llmgateway.v1.ProviderService/ListProviders": "providers.read",
    "/llmgateway.v1.ProviderService/WatchProviders": "providers.read",
    "/schemaservice.v1.MetricsService/WriteMetrics": "metrics.write",
    "/schemaservice.v1.MetricsService/StreamMetrics": "metrics.write",
    "/schemaservice.v1.MetricsService/QueryMetrics": "metrics.read",
    "/schemaservice.v1.MetricsService/ListBaselines": "metrics.read",
    "/schemaservice.v1.MetricsService/ListAnomalies": "metrics.read",
    "/schemaservice.v1.MigrationService/GetStatus": "migrations.read",
    "/schemaservice.v1.MigrationService/VerifySchema": "migrations.read",
    "/schemaservice.v1.MigrationService/LintMigrations": "migrations.read",
    "/schemaservice.v1.MigrationService/WaitForVersion": "migrations.read",
    "/schemaservice.v1.MigrationService/Migrate": "migrations.admin",
    "/schemaservice.v1.UsageService/RecordUsage": "usage.write",
    "/schemaservice.v1.UsageService/QueryUsage": "usage.read",
}
METHODS = sorted(EXPECTED_ROLES)


def test_every_method_of_both_services_has_the_documented_role() -> None:
    served = {
        f"/{service.full_name}/{method.name}"
        for module in (
            chat_service_pb2,
            provider_service_pb2,
            metrics_service_pb2,
            migration_service_pb2,
            usage_service_pb2,
        )
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert {**GATEWAY_ROLES, **SCHEMA_ROLES} == EXPECTED_ROLES
    assert set(EXPECTED_ROLES) == served  # a new RPC without a role would be refused to everyone


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, exc
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError(f"no ErrorInfo in {exc}")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.mark.parametrize("method", METHODS)
async def test_a_token_with_the_role_is_let_through(auth_port: int, pki: Pki, method: str) -> None:
    async with grpc.aio.secure_channel(f"127.0.0.1:{auth_port}", pki.client("anyone")) as channel:
        exc = await invoke(channel, method, bearer(token_of(ROLES[method])))
    assert exc.code() == grpc.StatusCode.UNIMPLEMENTED, exc


@pytest.mark.parametrize("method", METHODS)
async def test_a_token_without_the_role_is_denied(auth_port: int, pki: Pki, method: str) -> None:
    role = ROLES[method]
    async with grpc.aio.secure_channel(f"127.0.0.1:{auth_port}", pki.client("anyone")) as channel:
        exc = await invoke(channel, method, bearer(f"but-{role}"))
    assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, exc
    assert exc.details() == f"this method needs the role {role}"
    info = error_info(exc)
    assert info.reason == "PERMISSION_DENIED"
    assert dict(info.metadata) == {"role": role, "method": method}


@pytest.mark.parametrize("method", METHODS)
async def test_a_certificate_with_the_role_is_let_through(auth_port: int, pki: Pki, method: str) -> None:
    async with grpc.aio.secure_channel(f"127.0.0.1:{auth_port}", pki.client(f"only-{ROLES[method]}")) as channel:
        exc = await invoke(channel, method)
    assert exc.code() == grpc.StatusCode.UNIMPLEMENTED, exc


@pytest.mark.parametrize("method", METHODS)
async def test_a_certificate_without_the_role_is_denied(auth_port: int, pki: Pki, method: str) -> None:
    async with grpc.aio.secure_channel(f"127.0.0.1:{auth_port}", pki.client(f"all-but-{ROLES[method]}")) as channel:
        exc = await invoke(channel, method)
    assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, exc
    assert error_info(exc).metadata["role"] == ROLES[method]


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        bearer("not-a-listed-token"),
        bearer(""),
        (("authorization", f"Basic {token_of('chat')}"),),
        (("authorization", token_of("chat")),),
    ],
    ids=["none", "unknown token", "empty token", "basic scheme", "no scheme"],
)
async def test_missing_or_unknown_credentials_are_unauthenticated_alike(
    auth_port: int, pki: Pki, metadata: tuple[tuple[str, str], ...], caplog: pytest.LogCaptureFixture
) -> None:
    # A certificate from the CA whose subject is nobody's: the transport lets it in, auth does not.
    async with grpc.aio.secure_channel(f"127.0.0.1:{auth_port}", pki.client("nobody")) as channel:
        with caplog.at_level(logging.WARNING, logger="servicekit.auth"):
            exc = await invoke(channel, "/llmgateway.v1.ChatService/Chat", metadata)
    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
    assert exc.details() == "missing or unknown credentials"
    info = error_info(exc)
    assert info.reason == "UNAUTHENTICATED"
    assert dict(info.metadata) == {"role": "chat", "method": "/llmgateway.v1.ChatService/Chat"}
    [refusal] = [r for r in caplog.records if r.name == "servicekit.auth"]
    assert refusal.peer.startswith("ipv4:127.0.0.1:")  # type: ignore[attr-defined]
    for value, _ in metadata:
        assert value not in refusal.getMessage()
    assert all(token_of("chat") not in str(v) for v in vars(refusal).values())


async def test_a_subject_of_several_names_is_matched_as_rfc_2253_prints_it(auth_port: int, pki: Pki) -> None:
    """docs/security.md: `tls_subject` is the subject as gRPC prints it, e.g. `CN=web-frontend,O=Example`."""
    credentials = pki.client("web-frontend", organization="Example")
    async with grpc.aio.secure_channel(f"127.0.0.1:{auth_port}", credentials) as channel:
        exc = await invoke(channel, "/llmgateway.v1.ChatService/Chat")
    assert exc.code() == grpc.StatusCode.UNIMPLEMENTED, exc
    async with grpc.aio.secure_channel(f"127.0.0.1:{auth_port}", pki.client("web-frontend")) as channel:
        exc = await invoke(channel, "/llmgateway.v1.ChatService/Chat")
    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED  # the subject is matched whole, not by its CN


async def test_a_token_decides_over_the_certificate(auth_port: int, pki: Pki) -> None:
    """A caller with a certificate that names a role-holder cannot add someone else's token to get more."""
    async with grpc.aio.secure_channel(f"127.0.0.1:{auth_port}", pki.client("only-chat")) as channel:
        exc = await invoke(channel, "/llmgateway.v1.ChatService/Chat", bearer("but-chat"))
    assert exc.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_certificate_from_another_ca_never_gets_a_connection(auth_port: int, pki: Pki) -> None:
    async with grpc.aio.secure_channel(f"127.0.0.1:{auth_port}", pki.client("only-chat", Authority("other"))) as ch:
        exc = await invoke(ch, "/llmgateway.v1.ChatService/Chat", bearer(token_of("chat")))
    assert exc.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_and_reflection_stay_open(auth_port: int, pki: Pki) -> None:
    async with grpc.aio.secure_channel(f"127.0.0.1:{auth_port}", pki.client("nobody")) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = await invoke_reflection(channel)
    assert "llmgateway.v1.ChatService" in reflection


async def invoke_reflection(channel: grpc.aio.Channel) -> list[str]:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names: list[str] = []
    async for response in call:
        names += [s.name for s in response.list_services_response.service]
    return names


def test_the_roles_listed_are_the_callers_file_roles() -> None:
    from typing import get_args

    from servicekit.callers import Role

    # Roles that widen what a method shows rather than open a method (the caller still needs the method's role).
    widening = {"usage.read_all", "metrics.read_all"}
    assert sorted(get_args(Role)) == sorted({*ALL_ROLES, *widening})
