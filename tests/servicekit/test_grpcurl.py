"""grpcurl (the venv's .venv/bin/grpcurl) against a gateway served with TLS and a callers file.

As README.md#the-same-with-tls-and-a-token shows it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servicekit.procs import BIN, ServiceProcess, free_port
from tests.servicekit.certs import Authority

pytestmark = pytest.mark.timeout(60)
TOKEN = "grpcurl-demo-token-0123456789"
KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY")


@dataclass
class Files:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path
    callers: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    folder = tmp_path_factory.mktemp("grpcurl")
    ca = Authority()
    cert, key = ca.issue("gateway", server=True).write(folder, "server")
    client_cert, client_key = ca.issue("ops-laptop", server=False).write(folder, "client")
    stranger_cert, stranger_key = ca.issue("stranger", server=False).write(folder, "stranger")
    callers = folder / "callers.yaml"
    callers.write_text(
        "callers:\n"
        f'  - {{name: ops, token_sha256: "{hashlib.sha256(TOKEN.encode()).hexdigest()}", roles: [providers.read]}}\n'
        '  - {name: ops-laptop, tls_subject: "CN=ops-laptop", roles: [providers.read]}\n'
        "...\n"
    )
    yield Files(ca.write(folder / "ca.crt"), cert, key, client_cert, client_key, stranger_cert, stranger_key, callers)


async def grpcurl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "grpcurl"), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


def gateway(files: Files, *, mtls: bool) -> ServiceProcess:
    security = ["--tls-cert", str(files.cert), "--tls-key", str(files.key), "--callers", str(files.callers)]
    if mtls:
        security += ["--tls-client-ca", str(files.ca)]
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    return ServiceProcess("gateway-service", env=env, security=security, health_port=free_port())


async def test_grpcurl_with_tls_and_a_token(files: Files) -> None:
    with gateway(files, mtls=False) as server:
        await server.wait_serving()
        assert "INSECURE" not in server.output()
        method = "llmgateway.v1.ProviderService/ListProviders"
        bearer = ["-H", f"authorization: Bearer {TOKEN}"]
        code, out = await grpcurl("-cacert", str(files.ca), *bearer, server.address, method)
        assert code == 0, out
        assert {p["name"] for p in json.loads(out)["providers"]} >= {"openai", "anthropic"}
        code, out = await grpcurl("-cacert", str(files.ca), server.address, method)
        assert code != 0 and "Code: Unauthenticated" in out and "missing or unknown credentials" in out
        code, out = await grpcurl("-cacert", str(files.ca), server.address, "list")  # reflection needs no token
        assert code == 0 and "llmgateway.v1.ChatService" in out
        # no plaintext on a TLS port (a short connect timeout: grpcurl would otherwise retry for 10 s)
        code, out = await grpcurl("-plaintext", "-connect-timeout", "2", server.address, "list")
        assert code != 0
        assert TOKEN not in server.output()


async def test_grpcurl_with_mtls(files: Files) -> None:
    with gateway(files, mtls=True) as server:
        await server.wait_serving()
        method = "llmgateway.v1.ProviderService/ListProviders"
        tls = ["-cacert", str(files.ca)]
        code, out = await grpcurl(
            *tls, "-cert", str(files.client_cert), "-key", str(files.client_key), server.address, method
        )
        assert code == 0, out
        assert "providers" in json.loads(out)
        # A certificate from the CA whose subject is nobody's: connected, then refused; with the token, let in.
        stranger = ["-cert", str(files.stranger_cert), "-key", str(files.stranger_key)]
        code, out = await grpcurl(*tls, *stranger, server.address, method)
        assert code != 0 and "Code: Unauthenticated" in out
        code, out = await grpcurl(*tls, *stranger, "-H", f"authorization: Bearer {TOKEN}", server.address, method)
        assert code == 0, out
        # no client certificate: no connection (a short connect timeout: grpcurl would otherwise retry for 10 s)
        code, out = await grpcurl(*tls, "-connect-timeout", "2", server.address, "list")
        assert code != 0
