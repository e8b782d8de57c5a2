"""Rotation under a running server: certificates (open streams carry on), the callers file; bad files refused."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import ssl
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from servicekit.callers import SetupError
from servicekit.security import Security
from servicekit.server import NOT_SERVING, SERVING, Lifecycle, ServerOptions
from servicekit.tls import TlsFiles
from tests.servicekit.certs import Authority, Pem
from tests.servicekit.conftest import SERVICE_NAMES, Pki, start

pytestmark = pytest.mark.timeout(30)


def replace(path: Path, data: bytes) -> None:
    """Write the way Kubernetes and cert-manager update mounted files: a new file renamed over the old."""
    fresh = path.with_suffix(".new")
    fresh.write_bytes(data)
    os.replace(fresh, path)


async def check(port: int, authority: Authority) -> int:
    """Health of the server through a new connection that trusts only `authority`."""
    credentials = grpc.ssl_channel_credentials(authority.pem)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(response.status)


async def test_a_rotated_certificate_is_served_to_new_connections_and_open_streams_carry_on(tmp_path: Path) -> None:
    old, new = Authority("old CA"), Authority("new CA")
    cert, key = old.issue("server", server=True).write(tmp_path, "server")
    lifecycle = Lifecycle(SERVICE_NAMES)
    # TLS without callers: this test is about the transport (--insecure-dev allows the missing callers).
    server, port = await start(Security(tls_cert=cert, tls_key=key, insecure_dev=True), lifecycle)
    try:
        credentials = grpc.ssl_channel_credentials(old.pem)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="readiness"))
            assert (await watch.read()).status == SERVING

            rotated = new.issue("server", server=True)
            replace(key, rotated.key)
            replace(cert, rotated.cert)

            assert await check(port, new) == SERVING
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await check(port, old)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            # The stream opened before the rotation is still there and still told of changes.
            await lifecycle.set_ready(False)
            assert (await watch.read()).status == NOT_SERVING
            watch.cancel()
    finally:
        await server.stop(0)


async def test_a_half_written_rotation_keeps_the_previous_pair(tmp_path: Path) -> None:
    old, new = Authority("old CA"), Authority("new CA")
    cert, key = old.issue("server", server=True).write(tmp_path, "server")
    server, port = await start(Security(tls_cert=cert, tls_key=key, insecure_dev=True))
    try:
        replace(cert, new.issue("server", server=True).cert)  # the key of this one is not written yet
        assert await check(port, old) == SERVING
        replace(key, b"not a key")
        assert await check(port, old) == SERVING
    finally:
        await server.stop(0)


@pytest.mark.parametrize("broken", ["missing key", "key of another certificate", "garbage certificate", "bad CA"])
def test_unusable_files_stop_the_start_naming_them(tmp_path: Path, broken: str) -> None:
    from servicekit.tls import server_credentials

    ca = Authority()
    cert, key = ca.issue("server", server=True).write(tmp_path, "server")
    client_ca = ca.write(tmp_path / "ca.crt")
    if broken == "missing key":
        key.unlink()
    elif broken == "key of another certificate":
        key.write_bytes(ca.issue("other", server=True).key)
    elif broken == "garbage certificate":
        cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    else:
        client_ca.write_bytes(b"nonsense")
    with pytest.raises(SetupError, match=f"TLS files certificate {cert}"):
        server_credentials(TlsFiles(cert, key, client_ca))


def test_pem_fixture_writes_what_it_holds(tmp_path: Path) -> None:
    pem = Authority().issue("x", server=False)
    assert pem.write(tmp_path, "x") == (tmp_path / "x.crt", tmp_path / "x.key")
    assert Pem((tmp_path / "x.crt").read_bytes(), (tmp_path / "x.key").read_bytes()) == pem


async def test_a_rotated_callers_file_is_used_without_a_restart(tmp_path: Path) -> None:
    import hashlib

    from tests.servicekit.conftest import invoke

    def entry(token: str) -> bytes:
        digest = hashlib.sha256(token.encode()).hexdigest()
        return f'callers: [{{name: app, token_sha256: "{digest}", roles: [chat]}}]\n...\n'.encode()

    callers = tmp_path / "callers.yaml"
    callers.write_bytes(entry("old-token"))
    server, port = await start(Security(callers=callers, insecure_dev=True))  # plaintext: about the file only
    method = "/llmgateway.v1.ChatService/Chat"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert (await invoke(channel, method, (("authorization", "Bearer old-token"),))).code() == (
                grpc.StatusCode.UNIMPLEMENTED
            )
            replace(callers, entry("new-token"))
            # The file is looked at once a second at most: poll the way a client retrying would.
            for _ in range(40):
                if (await invoke(channel, method, (("authorization", "Bearer new-token"),))).code() != (
                    grpc.StatusCode.UNAUTHENTICATED
                ):
                    break
                await asyncio.sleep(0.1)
            assert (await invoke(channel, method, (("authorization", "Bearer new-token"),))).code() == (
                grpc.StatusCode.UNIMPLEMENTED
            )
            assert (await invoke(channel, method, (("authorization", "Bearer old-token"),))).code() == (
                grpc.StatusCode.UNAUTHENTICATED
            )
    finally:
        await server.stop(0)


async def test_an_expired_certificate_is_said_at_start_and_a_rotation_to_one_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = Authority()
    cert, key = ca.issue("server", server=True, valid_for=-datetime.timedelta(hours=1)).write(tmp_path, "server")
    with caplog.at_level(logging.WARNING, logger="servicekit.tls"):
        server, port = await start(Security(tls_cert=cert, tls_key=key, insecure_dev=True))
    try:
        [said] = [r for r in caplog.records if r.name == "servicekit.tls"]
        assert (said.levelname, said.getMessage()) == ("ERROR", "TLS certificate expired")
        fresh = ca.issue("server", server=True)
        replace(key, fresh.key)
        replace(cert, fresh.cert)
        assert await check(port, ca) == SERVING  # the valid one is taken
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="servicekit.tls"):
            expired = ca.issue("server", server=True, valid_for=-datetime.timedelta(hours=1))
            replace(key, expired.key)
            replace(cert, expired.cert)
            assert await check(port, ca) == SERVING  # still the valid pair: the expired one was refused
        assert any("expired" in str(getattr(r, "error", "")) for r in caplog.records)
    finally:
        await server.stop(0)


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plaintext"])
async def test_a_connection_that_never_speaks_http2_is_dropped(tmp_path: Path, pki: Pki, tls: bool) -> None:
    """gRPC's default handshake timeout is 120 s; ServerOptions sets 10 s (here 0.3 s, the fault under test)."""
    security = Security(tls_cert=pki.server.cert, tls_key=pki.server.key, insecure_dev=True) if tls else None
    server, port = await start(security or Security(insecure_dev=True), options=ServerOptions(handshake_timeout_ms=300))
    try:
        context = ssl.create_default_context(cafile=pki.ca_file) if tls else None
        if context is not None:
            context.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        async with asyncio.timeout(10):
            said = await reader.read()  # to the end: the server closes the connection
        assert reader.at_eof() and b"handshake timeout" in said  # its GOAWAY says why
        writer.close()
    finally:
        await server.stop(0)
