"""The slow drip over mTLS (issue #18, point 1, on the certificate path): a connection without a client
certificate the server's client CA signed never reaches HTTP/2, whatever it sends; with one, the call is
still decided on its headers, by the certificate's caller, before its message is read.

Each attack is the raw HTTP/2 client's (llm_simulator/h2client.py) over TLS: calls announcing 16 MiB and
sending 64 KiB of it. The certificates are throwaway ones (tests/servicekit/certs.py).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from llm_simulator.h2client import H2Client
from servicekit.concurrency import Limits
from servicekit.tls import TlsFiles
from tests.hostile.walls import CERT_HOG, SIXTEEN_MIB, WRITE_METRICS, call, until, walled_server
from tests.servicekit.certs import Authority

pytestmark = pytest.mark.timeout(30)

UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED = 16, 7, 8
DRIP = 64 * 1024


@dataclass
class Pki:
    folder: Path
    ca: Authority
    server: TlsFiles

    def context(self, common_name: str | None, authority: Authority | None = None) -> ssl.SSLContext:
        """A client's TLS: trusting the server's CA, presenting a certificate for `common_name` signed by
        `authority` (the server's client CA unless given), or none."""
        context = ssl.create_default_context(cafile=self.folder / "ca.crt")
        context.set_alpn_protocols(["h2"])
        if common_name is not None:
            cert, key = (authority or self.ca).issue(common_name, server=False).write(self.folder, common_name)
            context.load_cert_chain(cert, key)
        return context

    async def call(self, address: str, common_name: str | None) -> grpc.aio.AioRpcError:
        """One WriteMetrics through grpc's own client, with a certificate for `common_name` or none."""
        ca, key, cert = (self.folder / "ca.crt").read_bytes(), None, None
        if common_name is not None:
            pem = self.ca.issue(common_name, server=False)
            cert, key = pem.cert, pem.key
        async with grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca, key, cert)) as channel:
            method = channel.unary_unary(WRITE_METRICS, request_serializer=None, response_deserializer=None)
            try:
                await method(b"", timeout=10)
            except grpc.aio.AioRpcError as exc:
                return exc
        raise AssertionError("WriteMetrics succeeded")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    folder = tmp_path_factory.mktemp("mtls")
    ca = Authority()
    cert, key = ca.issue("server", server=True).write(folder, "server")
    yield Pki(folder, ca, TlsFiles(cert, key, ca.write(folder / "ca.crt")))


@pytest.mark.parametrize("client", ["no certificate", "a rogue CA's"])
async def test_without_a_certificate_of_the_client_ca_a_drip_ends_with_the_handshake(
    tmp_path: Path, pki: Pki, client: str
) -> None:
    context = pki.context(None) if client == "no certificate" else pki.context(CERT_HOG, Authority("rogue CA"))
    # TLS 1.3: the client's side of the handshake is done before the server has checked its certificate, so the
    # calls below go out (with the preface) before the server has said anything.
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    async with walled_server(tmp_path, tls=pki.server) as walled:
        slots = walled.lifecycle.slots
        assert slots is not None
        client_ = await H2Client.connect("127.0.0.1", walled.port, context, settle=False)
        try:
            streams = [client_.drip(WRITE_METRICS, SIXTEEN_MIB, DRIP, ()) for _ in range(8)]
            await client_.closed.wait()
            assert sum(client_.streams[s].sent for s in streams) > 0  # it did send
            assert not client_.settings  # the server never spoke HTTP/2 on this connection
            assert [client_.streams[s].status for s in streams] == [None] * 8  # no call was ever answered
            assert slots.count() == 0
        finally:
            await client_.close()


async def test_a_certificate_nobody_listed_is_refused_on_the_headers(tmp_path: Path, pki: Pki) -> None:
    async with walled_server(tmp_path, tls=pki.server) as walled:
        client = await H2Client.connect("127.0.0.1", walled.port, pki.context("stranger"))
        try:
            streams = [client.drip(WRITE_METRICS, SIXTEEN_MIB, DRIP) for _ in range(8)]
            assert [await client.status(s) for s in streams] == [UNAUTHENTICATED] * 8
            assert all(client.streams[s].sent <= DRIP + 5 for s in streams)
            assert walled.lifecycle.slots is not None and walled.lifecycle.slots.count() == 0
        finally:
            await client.close()


async def test_a_listed_certificate_without_the_role_is_refused_on_the_headers(tmp_path: Path, pki: Pki) -> None:
    async with walled_server(tmp_path, tls=pki.server) as walled:
        client = await H2Client.connect("127.0.0.1", walled.port, pki.context("only-chat"))  # cert-chat: chat only
        try:
            streams = [client.drip(WRITE_METRICS, SIXTEEN_MIB, DRIP) for _ in range(8)]
            assert [await client.status(s) for s in streams] == [PERMISSION_DENIED] * 8
            assert "this method needs the role metrics.write" in client.streams[streams[0]].message
            assert walled.lifecycle.slots is not None and walled.lifecycle.slots.count() == 0
        finally:
            await client.close()


async def test_a_certificate_caller_dripping_holds_only_its_own_slots(tmp_path: Path, pki: Pki) -> None:
    limits = Limits(max_calls=8, max_calls_per_caller=4, max_streams=8, max_streams_per_caller=2)
    async with walled_server(tmp_path, limits, tls=pki.server) as walled:
        slots = walled.lifecycle.slots
        assert slots is not None
        client = await H2Client.connect("127.0.0.1", walled.port, pki.context(CERT_HOG))
        try:
            held = [client.drip(WRITE_METRICS, SIXTEEN_MIB, DRIP) for _ in range(4)]
            await until(lambda: slots.count(caller="cert-hog") == 4)
            over = client.drip(WRITE_METRICS, SIXTEEN_MIB, DRIP)
            assert await client.status(over) == RESOURCE_EXHAUSTED
            assert all(client.streams[s].status is None for s in held)  # its own calls were not cut
            # Another caller, by its certificate, still gets through (UNIMPLEMENTED: the base servicer's answer).
            assert (await pki.call(walled.address, "all-but-chat")).code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            await client.close()
        await until(lambda: slots.count() == 0)  # the closed connection gave its slots back


async def test_grpc_clients_with_and_without_a_listed_certificate(tmp_path: Path, pki: Pki) -> None:
    """The same walls through grpc's own client: without a certificate no call gets through, nor in plaintext."""
    async with walled_server(tmp_path, tls=pki.server) as walled:
        assert (await pki.call(walled.address, None)).code() == grpc.StatusCode.UNAVAILABLE
        assert (await pki.call(walled.address, "stranger")).code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await pki.call(walled.address, CERT_HOG)).code() == grpc.StatusCode.UNIMPLEMENTED
        assert (await call(walled.address, WRITE_METRICS, ())).code() == grpc.StatusCode.UNAVAILABLE
