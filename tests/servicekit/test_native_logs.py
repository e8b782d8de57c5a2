"""gRPC core's lines in the JSON log; a TLS handshake failure once a minute per reason, with what it means."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from servicekit.native_logs import Folding, emit
from servicekit.procs import ServiceProcess, free_port
from tests.servicekit.certs import Authority

NO_CERT = (
    "I1207 20:50:56.030129   31410 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: "
    "error:100000c0:SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE: Invalid certificate "
    "verification context"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_reason_is_logged_once_a_minute_with_how_many_were_folded() -> None:
    clock = Clock()
    folding = Folding(60.0, clock)
    assert folding.observe("a") == 0
    assert [folding.observe("a") for _ in range(3)] == [None, None, None]
    assert folding.observe("b") == 0  # each reason has its own minute
    clock.now += 60.0
    assert folding.observe("a") == 3


def test_lines_become_records(caplog: pytest.LogCaptureFixture) -> None:
    folding = Folding(60.0, Clock())
    with caplog.at_level(logging.DEBUG):
        emit(NO_CERT, folding)
        emit(NO_CERT, folding)
        emit("E1207 20:50:56.030129   31410 chttp2_server.cc:1] bind failed", folding)
        emit("something a child process printed", folding)
    (tls, bind, raw) = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert tls == ("grpc", "WARNING", "TLS handshake failed")
    assert caplog.records[0].meaning == "the client sent no certificate, and this port requires one (mTLS)"  # type: ignore[attr-defined]
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in caplog.records[0].reason  # type: ignore[attr-defined]
    assert bind == ("grpc", "ERROR", "bind failed") and raw == (
        "stderr",
        "WARNING",
        "something a child process printed",
    )


@pytest.mark.timeout(60)
async def test_a_client_without_a_certificate_on_an_mtls_port_is_one_json_warning(tmp_path: Path) -> None:
    ca = Authority()
    cert, key = ca.issue("gateway", server=True).write(tmp_path, "server")
    ca_file = ca.write(tmp_path / "ca.crt")
    callers = tmp_path / "callers.yaml"
    callers.write_text('callers:\n  - {name: ops, tls_subject: "CN=ops", roles: [providers.read]}\n...\n')
    security = ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(ca_file)]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    server = ServiceProcess(
        "gateway-service", env=env, security=[*security, "--callers", str(callers)], health_port=free_port()
    )
    with server:
        await server.wait_serving()
        no_cert = grpc.ssl_channel_credentials(ca.pem)
        for _ in range(3):  # a fresh channel each time: three handshakes
            async with grpc.aio.secure_channel(server.address, no_cert) as channel:
                with pytest.raises(grpc.aio.AioRpcError):
                    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        server.terminate()
        assert await server.wait_exit(timeout_s=30) == 0
        lines = server.output().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON: gRPC core's included
    failures = [r for r in records if r["message"] == "TLS handshake failed"]
    assert len(failures) == 1, failures
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in failures[0]["reason"] and "mTLS" in failures[0]["meaning"]
