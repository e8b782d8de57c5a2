"""The credentials the gateway presents to the schema service are re-read when their files change: a
rotated token and a rotated client certificate during traffic lose no metric and double none, and the
refusals in between are logged as refusals with their code (the real schema service over TLS and mTLS)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path

import asyncpg
import pytest

from gateway_service.schema_channel import SchemaChannel
from llm_simulator import SimulatorHandle
from schemaservice.v1 import metrics_service_pb2 as mpb
from schemaservice.v1 import metrics_service_pb2_grpc
from servicekit.security import Security
from servicekit.tls import ClientCredentials
from tests.gateway.schema_helpers import METRICS_PER_CHAT, Reporting, replace, stored, with_reporting
from tests.schemaserver import RestartableSchemaServer
from tests.servicekit.certs import Authority

pytestmark = pytest.mark.timeout(60)
BUDGET_S = 20  # only a gateway that never takes the new credentials waits this long


def callers(token: str) -> bytes:
    sha = hashlib.sha256(token.encode()).hexdigest()
    return (
        f'callers:\n  - {{name: gateway, token_sha256: "{sha}", roles: [metrics.write, usage.write]}}\n...\n'.encode()
    )


async def test_a_rotated_token_file_is_read_again_and_no_metric_is_lost(
    sim: SimulatorHandle, migrated_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = Authority()
    cert, key = ca.issue("schema-service", server=True).write(tmp_path, "schema")
    callers_file, token = tmp_path / "callers.yaml", tmp_path / "token"
    replace(callers_file, callers("token-1"))
    replace(token, b"token-1\n")
    schema = RestartableSchemaServer(migrated_db, Security(tls_cert=cert, tls_key=key, callers=callers_file))
    await schema.start()

    async def rotate_during_chats(gateway: Reporting) -> None:
        await gateway.chats(3)
        await asyncio.wait_for(gateway.until(lambda s: s.sent == 3 * METRICS_PER_CHAT), BUDGET_S)
        replace(token, b"token-2\n")  # the gateway's Secret is updated before the schema service's callers
        await gateway.chats(3)
        await asyncio.wait_for(gateway.until(lambda s: s.failures["UNAUTHENTICATED"] > 0), BUDGET_S)
        replace(callers_file, callers("token-2"))  # token-1 is no longer accepted
        await gateway.chats(3)
        await asyncio.wait_for(gateway.until(lambda s: s.sent == 9 * METRICS_PER_CHAT), BUDGET_S)
        await asyncio.wait_for(gateway.usage_settled(), BUDGET_S)  # the usage records took the new token too
        assert not gateway.sender.dropped

    try:
        with caplog.at_level(logging.INFO):
            await with_reporting(
                sim,
                schema.address,
                rotate_during_chats,
                schema_service_ca=ca.write(tmp_path / "ca.crt"),
                schema_service_token_file=token,
            )
    finally:
        await schema.stop()
    assert await stored(migrated_db) == (9 * METRICS_PER_CHAT, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert "schema-service token reloaded" in messages
    refused = [r for r in caplog.records if r.getMessage() == "metrics refused by the schema service; retrying"]
    assert refused and refused[0].code == "UNAUTHENTICATED"  # type: ignore[attr-defined]
    assert not [m for m in messages if "full" in m or "dropped" in m]
    assert not [r for r in caplog.records if "token-" in r.getMessage() or "token-" in str(r.__dict__.values())]


async def test_a_rotated_client_certificate_opens_a_new_channel_and_no_metric_is_lost(
    sim: SimulatorHandle, migrated_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server_ca, old_ca, new_ca = Authority("server CA"), Authority("client CA 1"), Authority("client CA 2")
    cert, key = server_ca.issue("schema-service", server=True).write(tmp_path, "schema")
    client_ca = tmp_path / "client-ca.crt"
    replace(client_ca, old_ca.pem)
    callers_file = tmp_path / "callers.yaml"
    callers_file.write_text(
        'callers:\n  - {name: gateway, tls_subject: "CN=gateway", roles: [metrics.write, usage.write]}\n...\n'
    )
    security = Security(tls_cert=cert, tls_key=key, tls_client_ca=client_ca, callers=callers_file)
    schema = RestartableSchemaServer(migrated_db, security)
    await schema.start()
    gateway_cert, gateway_key = tmp_path / "gateway.crt", tmp_path / "gateway.key"
    issued = old_ca.issue("gateway", server=False)
    replace(gateway_cert, issued.cert)
    replace(gateway_key, issued.key)

    async def rotate_during_chats(gateway: Reporting) -> None:
        await gateway.chats(3)
        await asyncio.wait_for(gateway.until(lambda s: s.sent == 3 * METRICS_PER_CHAT), BUDGET_S)
        rotated = new_ca.issue("gateway", server=False)
        replace(gateway_cert, rotated.cert)  # the certificate before its key: not taken until the key matches
        await gateway.chats(1)
        await asyncio.wait_for(gateway.until(lambda s: s.sent == 4 * METRICS_PER_CHAT), BUDGET_S)
        replace(gateway_key, rotated.key)
        replace(client_ca, new_ca.pem)  # only the new CA's certificates from now on
        await gateway.chats(2)
        await asyncio.wait_for(gateway.until(lambda s: s.sent == 6 * METRICS_PER_CHAT), BUDGET_S)
        # A restart makes every connection new: one still made with the old certificate is refused.
        await schema.stop()
        await gateway.chats(2)
        await schema.start()
        await gateway.chats(1)
        await asyncio.wait_for(gateway.until(lambda s: s.sent == 9 * METRICS_PER_CHAT), BUDGET_S)
        assert not gateway.sender.dropped

    try:
        with caplog.at_level(logging.INFO):
            await with_reporting(
                sim,
                schema.address,
                rotate_during_chats,
                schema_service_ca=server_ca.write(tmp_path / "server-ca.crt"),
                schema_service_cert=gateway_cert,
                schema_service_key=gateway_key,
            )
    finally:
        await schema.stop()
    assert await stored(migrated_db) == (9 * METRICS_PER_CHAT, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert "schema-service client TLS files not reloaded; the previous one stays in use" in messages  # cert, no key
    assert "schema-service client TLS files reloaded" in messages


async def test_a_call_in_flight_when_the_certificate_changes_ends_ok_on_the_old_channel(
    migrated_db: str, tmp_path: Path
) -> None:
    server_ca, client_ca = Authority("server CA"), Authority("client CA")
    cert, key = server_ca.issue("schema-service", server=True).write(tmp_path, "schema")
    callers_file = tmp_path / "callers.yaml"
    callers_file.write_text(
        'callers:\n  - {name: gateway, tls_subject: "CN=gateway", roles: [metrics.write, usage.write]}\n...\n'
    )
    ca_file = client_ca.write(tmp_path / "client-ca.crt")
    schema = RestartableSchemaServer(
        migrated_db, Security(tls_cert=cert, tls_key=key, tls_client_ca=ca_file, callers=callers_file)
    )
    await schema.start()
    gateway_cert, gateway_key = client_ca.issue("gateway", server=False).write(tmp_path, "gateway")
    client = ClientCredentials(
        tls=True, ca=server_ca.write(tmp_path / "server-ca.crt"), cert=gateway_cert, key=gateway_key
    )
    channel = SchemaChannel(schema.address, client)
    batch = mpb.WriteMetricsRequest(
        request_id="in-flight", metrics=[mpb.Metric(name="llm.attempt.duration", value=1.0, unit="ms")]
    )
    batch.metrics[0].time.FromSeconds(int(time.time()))
    blocker = await asyncpg.connect(migrated_db)
    try:
        # The batch's commit waits behind this lock, so its call is still in flight when the files change.
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("LOCK TABLE metric_write_requests IN ACCESS EXCLUSIVE MODE")
        old = await channel.current()
        call = metrics_service_pb2_grpc.MetricsServiceStub(old).WriteMetrics(batch, timeout=20)
        rotated = client_ca.issue("gateway", server=False)
        replace(gateway_cert, rotated.cert)
        replace(gateway_key, rotated.key)
        assert await channel.current() is not old  # the next batches go on a new channel
        await holding.rollback()
        answer = await call  # the old channel was closed with a grace: its call ended on its own
        assert answer.written_count == 1
    finally:
        await blocker.close()
        await channel.close()
        await schema.stop()
    assert await stored(migrated_db) == (1, 0)
