"""Real clients against both running servers: grpcurl, and the contracts wheel in a clean virtualenv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servicekit.procs import BIN, ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
KEY_VARS = ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY")


@dataclass
class Servers:
    schema: ServiceProcess
    gateway: ServiceProcess


@pytest.fixture(scope="module")
async def servers(pg_admin_dsn: str) -> AsyncIterator[Servers]:
    import uuid

    import asyncpg

    from schema_service.database import with_database

    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(pg_admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    schema = ServiceProcess("schema-service", "--database-url", with_database(pg_admin_dsn, name), env=env)
    gateway = ServiceProcess("gateway-service", env={**env, "SCHEMA_SERVICE_ADDR": schema.address})
    with schema, gateway:
        await schema.wait_serving("readiness", timeout_s=60)
        await gateway.wait_serving("readiness", timeout_s=60)
        yield Servers(schema, gateway)
    conn = await asyncpg.connect(pg_admin_dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "grpcurl"), "-plaintext", *args], capture_output=True, text=True, timeout=30)


@pytest.mark.timeout(120)
async def test_grpcurl_lists_describes_checks_and_calls(servers: Servers) -> None:
    gateway, schema = servers.gateway.address, servers.schema.address
    listed = grpcurl(gateway, "list").stdout.split()
    assert {"llmgateway.v1.ChatService", "llmgateway.v1.ProviderService", "grpc.health.v1.Health"} <= set(listed)
    # This grpcurl speaks v1alpha; newer tools speak v1, which both servers serve too.
    for address in (gateway, schema):
        described = grpcurl(address, "describe", "grpc.reflection.v1.ServerReflection").stdout
        assert "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest )" in described
    listed = grpcurl(schema, "list").stdout.split()
    assert {"schemaservice.v1.MigrationService", "schemaservice.v1.MetricsService", "grpc.health.v1.Health"} <= set(
        listed
    )

    described = grpcurl(gateway, "describe", "llmgateway.v1.ChatService").stdout
    signature = (
        "rpc StreamChat ( .llmgateway.v1.StreamChatRequest ) returns ( stream .llmgateway.v1.StreamChatResponse )"
    )
    assert signature in described
    assert "// StreamChat streams one chat completion" in described
    described = grpcurl(schema, "describe", "schemaservice.v1.Metric").stdout
    assert "Measured value; must be finite." in described

    for address in (gateway, schema):
        health = grpcurl("-d", '{"service": "readiness"}', address, "grpc.health.v1.Health/Check")
        assert json.loads(health.stdout) == {"status": "SERVING"}, health.stderr

    providers = grpcurl(gateway, "llmgateway.v1.ProviderService/ListProviders")
    assert providers.returncode == 0, providers.stderr
    listed_providers = json.loads(providers.stdout)["providers"]
    openai = next(p for p in listed_providers if p["name"] == "openai")
    assert openai.get("configured", False) is False
    assert "OPENAI_API_KEY" in openai["credentialSource"]

    status = grpcurl(schema, "schemaservice.v1.MigrationService/GetStatus")
    assert status.returncode == 0, status.stderr
    assert int(json.loads(status.stdout)["currentVersion"]) >= 1


CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    from llmgateway.v1 import provider_service_pb2, provider_service_pb2_grpc
    from schemaservice.v1 import migration_service_pb2, migration_service_pb2_grpc

    gateway, schema = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(gateway) as channel:
        providers = provider_service_pb2_grpc.ProviderServiceStub(channel).ListProviders(
            provider_service_pb2.ListProvidersRequest(), timeout=10)
    with grpc.insecure_channel(schema) as channel:
        status = migration_service_pb2_grpc.MigrationServiceStub(channel).GetStatus(
            migration_service_pb2.GetStatusRequest(), timeout=10)
    missing = []
    for module in ("openai", "anthropic", "google.genai", "asyncpg", "gateway_service", "schema_service"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    print(json.dumps({"providers": [p.name for p in providers.providers],
                      "version": status.current_version, "missing": missing}))
    """
)


@pytest.mark.timeout(300)
async def test_contracts_wheel_in_clean_venv_calls_both_servers(servers: Servers, tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), "contracts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("llm_platform_contracts-*.whl")
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=240)
    (tmp_path / "client.py").write_text(CLIENT)
    result = subprocess.run(
        [str(python), str(tmp_path / "client.py"), servers.gateway.address, servers.schema.address],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert "openai" in answer["providers"]
    assert answer["version"] >= 1
    # Callers get the stubs without the servers' dependencies.
    server_only = {"openai", "anthropic", "google.genai", "asyncpg", "gateway_service", "schema_service"}
    assert set(answer["missing"]) == server_only
