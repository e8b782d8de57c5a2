"""The gateway's channel to the schema service: TLS, its client certificate and its own token."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway_service.schema_channel import Reloaded, SchemaChannel, TokenFile, metrics_sender
from gateway_service.sender import SendError
from schemaservice.v1 import metrics_service_pb2
from servicekit.callers import SetupError
from servicekit.tls import ClientCredentials
from tests.servicekit.certs import Authority
from tests.servicekit.conftest import Pki, token_of

pytestmark = pytest.mark.timeout(30)
BATCH = metrics_service_pb2.WriteMetricsRequest(request_id="r1")


def credentials(pki: Pki, common_name: str, token: str | None) -> ClientCredentials:
    cert, key = pki.ca.issue(common_name, server=False).write(pki.folder, f"client-{common_name}")
    token_file = None
    if token is not None:
        token_file = pki.folder / f"token-{common_name}"
        token_file.write_text(token + "\n")  # a trailing newline, as `echo` and Secrets leave it
    return ClientCredentials(tls=True, ca=pki.ca_file, cert=cert, key=key, token_file=token_file)


async def send_once(port: int, client: ClientCredentials) -> None:
    channel = SchemaChannel(f"127.0.0.1:{port}", client)
    try:
        await metrics_sender(channel)(BATCH)
    finally:
        await channel.close()


async def test_the_gateway_token_reaches_the_schema_service_over_mtls(auth_port: int, pki: Pki) -> None:
    # Past authentication the base servicer answers UNIMPLEMENTED: the token and role were accepted.
    with pytest.raises(SendError, match="^UNIMPLEMENTED"):
        await send_once(auth_port, credentials(pki, "gateway", token_of("metrics.write")))


async def test_without_its_token_the_gateway_is_unauthenticated(auth_port: int, pki: Pki) -> None:
    with pytest.raises(SendError, match="^UNAUTHENTICATED: missing or unknown credentials") as caught:
        await send_once(auth_port, credentials(pki, "gateway", None))
    assert caught.value.retryable  # a rotated token may fix it: the sender waits and tries again


async def test_a_server_certificate_from_another_ca_is_not_trusted(auth_port: int, pki: Pki) -> None:
    client = credentials(pki, "gateway", token_of("metrics.write"))
    other = Authority("other").write(pki.folder / "other-ca.crt")
    with pytest.raises(SendError) as caught:  # UNAVAILABLE is retried by the telemetry sender
        await send_once(auth_port, ClientCredentials(True, other, client.cert, client.key, client.token_file))
    assert caught.value.code == "UNAVAILABLE" and caught.value.retryable


def test_a_token_is_never_sent_in_plaintext(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    with pytest.raises(SetupError, match="only sent over TLS"):
        ClientCredentials(token_file=token).channel("127.0.0.1:1")
    with pytest.raises(SetupError, match="only sent over TLS"):
        SchemaChannel("127.0.0.1:1", ClientCredentials(token_file=token))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=f"{tmp_path / 'absent'}: No such file"):
        ClientCredentials(tls=True, ca=tmp_path / "absent").channel("127.0.0.1:1")
    with pytest.raises(SetupError, match=f"{tmp_path / 'absent'}"):
        SchemaChannel("127.0.0.1:1", ClientCredentials(tls=True, ca=tmp_path / "absent"))
    with pytest.raises(SetupError, match=f"{tmp_path / 'token'}: No such file"):
        SchemaChannel("127.0.0.1:1", ClientCredentials(tls=True, token_file=tmp_path / "token"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SetupError, match="the token file is empty"):
        SchemaChannel("127.0.0.1:1", ClientCredentials(tls=True, token_file=tmp_path / "empty"))


def test_a_certificate_and_key_that_do_not_belong_together_are_refused_at_start(pki: Pki) -> None:
    first, _ = pki.ca.issue("a", server=False).write(pki.folder, "a")
    _, second = pki.ca.issue("b", server=False).write(pki.folder, "b")
    with pytest.raises(SetupError, match="client certificate .*a.crt, key .*b.key"):
        SchemaChannel("127.0.0.1:1", ClientCredentials(tls=True, ca=pki.ca_file, cert=first, key=second))


def test_a_token_file_written_in_place_is_taken_once_written(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    plugin = TokenFile(token)
    token.write_text("")  # `echo new > token` truncates first: an empty file is not a token
    assert plugin.current() == "first"
    token.write_text("second\n")
    assert plugin.current() == "second"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "schema-service token not reloaded; the previous one stays in use"
    ]


def test_files_that_change_while_being_read_are_read_again(tmp_path: Path) -> None:
    path = tmp_path / "value"
    path.write_text("1")
    reads: list[str] = []

    def read() -> str:
        text = path.read_text()
        reads.append(text)
        if text == "22":  # a writer at work: the file changes again before this read is over
            path.write_text("333")  # (each version a new size: a stamp tells them apart within one mtime tick)
        return text

    value = Reloaded([path], read, "value")
    path.write_text("22")
    assert value.current() == ("1", False)  # "22" was read, but the file changed meanwhile
    assert value.current() == ("333", True) and reads == ["1", "22", "333"]
