"""The gateway's HTTP/1.1 transport against raw servers that frame responses every way HTTP allows.

The SDK-level behaviour (every fault, every provider) is covered by the fault catalogue, which runs
on this transport; here are the protocol cases a well-behaved simulator never produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway_service.providers.base import ProviderConfig
from gateway_service.providers.transport import GatewayTransport, http_client
from tests.gateway.test_connect_timeout import blackhole  # noqa: F401  (fixture)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw TCP server; `connections` counts accepted connections, `requests` keeps each request head+body."""

    def __init__(self, respond: Callable[[int], bytes | None], hang_up: bool) -> None:
        self.respond = respond  # request number (from 0) -> raw response bytes, or None to hang up
        self.hang_up = hang_up  # close the connection after each answer
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.client_left = asyncio.Event()
        self.handlers: set[asyncio.Task[object]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.lower().split(b"\r\n")
                length = next((int(line[15:]) for line in lines if line.startswith(b"content-length:")), 0)
                self.requests.append((head, await reader.readexactly(length)))
                answer = self.respond(len(self.requests) - 1)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.hang_up or b"connection: close" in answer.lower() or b"HTTP/1.0" in answer[:9]:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_left.set()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


@asynccontextmanager
async def serving(
    respond: Callable[[int], bytes | None], tls: ssl.SSLContext | None = None, hang_up: bool = False
) -> AsyncIterator[tuple[Server, int]]:
    server = Server(respond, hang_up)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield server, listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        for task in server.handlers:  # those still waiting on a kept-alive connection
            task.cancel()
        await asyncio.gather(*server.handlers, return_exceptions=True)


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def get(client: httpx2.AsyncClient, port: int, scheme: str = "http") -> httpx2.Response:
    return await client.post(f"{scheme}://127.0.0.1:{port}/v1/x?q=1", content=b'{"a": 1}', timeout=5)


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=GatewayTransport()) as c:
        yield c


async def test_the_request_leaves_whole_and_the_connection_is_reused(client: httpx2.AsyncClient) -> None:
    async with serving(lambda n: ok(b"answer %d" % n)) as (server, port):
        first, second = await get(client, port), await get(client, port)
    assert (first.status_code, first.text, second.text) == (200, "answer 0", "answer 1")
    assert server.connections == 1
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/x?q=1 HTTP/1.1\r\n")
    assert b"\r\ncontent-length: 8\r\n" in head.lower() and f"host: 127.0.0.1:{port}".encode() in head.lower()
    assert body == b'{"a": 1}'


async def test_chunked_with_extensions_and_trailers(client: httpx2.AsyncClient) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n"
    )
    async with serving(lambda n: chunked if n == 0 else ok()) as (server, port):
        response = await get(client, port)
        assert response.text == "hello world"
        assert (await get(client, port)).text == "hello"
    assert server.connections == 1  # the trailers were consumed, so the connection stayed usable


async def test_content_encoding_is_left_to_httpx(client: httpx2.AsyncClient) -> None:
    async with serving(lambda n: ok(gzip.compress(b"zipped"), b"content-encoding: gzip\r\n")) as (_, port):
        assert (await get(client, port)).text == "zipped"


@pytest.mark.parametrize(
    "answer",
    [
        ok(extra=b"Connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\n\r\nhello",  # no length: the body ends when the server closes
    ],
    ids=["connection-close", "http-1.0", "read-to-eof"],
)
async def test_responses_that_end_the_connection_are_not_reused(client: httpx2.AsyncClient, answer: bytes) -> None:
    async with serving(lambda n: answer, hang_up=True) as (server, port):  # the server ends each one by closing
        assert [(await get(client, port)).text for _ in range(2)] == ["hello", "hello"]
    assert server.connections == 2


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    transport = GatewayTransport()
    async with httpx2.AsyncClient(transport=transport) as client, serving(lambda n: ok(), hang_up=True) as running:
        server, port = running
        assert (await get(client, port)).text == "hello"  # the server hangs up once it answered, without saying so
        await asyncio.wait_for(_seen_closed(transport), 5)
        assert (await get(client, port)).text == "hello"
    assert server.connections == 2


async def _seen_closed(transport: GatewayTransport) -> None:
    # The client's loop must have read the server's FIN before the next request picks a connection.
    while any(conn.reusable for idle in transport._idle.values() for conn in idle):
        await asyncio.sleep(0.001)


async def test_interim_responses_are_skipped(client: httpx2.AsyncClient) -> None:
    async with serving(lambda n: b"HTTP/1.1 100 Continue\r\n\r\n" + ok()) as (_, port):
        response = await get(client, port)
    assert (response.status_code, response.text) == (200, "hello")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel", httpx2.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello", httpx2.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", httpx2.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n", httpx2.RemoteProtocolError),
        (b"SSH-2.0-OpenSSH\r\n\r\n", httpx2.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", httpx2.RemoteProtocolError),
        (None, httpx2.RemoteProtocolError),  # closed without answering
    ],
    ids=["truncated-chunk", "short-body", "bad-chunk-size", "bad-length", "not-http", "bad-header", "no-answer"],
)
async def test_broken_responses_raise_what_httpcore_would(
    client: httpx2.AsyncClient, answer: bytes | None, error: type[Exception]
) -> None:
    async with serving(lambda n: answer, hang_up=True) as (_, port):
        with pytest.raises(error):
            response = await get(client, port)
            await response.aread()


async def test_connect_refused_and_connect_timeout(client: httpx2.AsyncClient, blackhole: int) -> None:  # noqa: F811
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    with pytest.raises(httpx2.ConnectError):
        await get(client, port)
    with pytest.raises(httpx2.ConnectTimeout):
        await client.post(f"http://127.0.0.1:{blackhole}/", content=b"", timeout=httpx2.Timeout(5, connect=0.05))


async def test_read_timeout(client: httpx2.AsyncClient) -> None:
    async with serving(lambda n: b"") as (_, port):  # reads the request, never answers
        with pytest.raises(httpx2.ReadTimeout):
            await client.post(f"http://127.0.0.1:{port}/", content=b"", timeout=httpx2.Timeout(5, read=0.05))


async def test_closing_mid_body_hangs_up_at_once(client: httpx2.AsyncClient) -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
    async with serving(lambda n: head) as (server, port):
        request = client.build_request("POST", f"http://127.0.0.1:{port}/", content=b"")
        response = await client.send(request, stream=True)
        assert await anext(response.aiter_bytes()) == b"hello"
        await response.aclose()
        await asyncio.wait_for(server.client_left.wait(), 5)


def _self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for 127.0.0.1 and a client context that trusts exactly that certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return server, ssl.create_default_context(cafile=str(tmp / "cert.pem"))


async def test_tls_verifies_the_server(tmp_path: Path) -> None:
    server_ctx, trusting = _self_signed(tmp_path)
    async with serving(lambda n: ok(b"secure %d" % n), tls=server_ctx) as (server, port):
        async with httpx2.AsyncClient(transport=GatewayTransport(ssl_context=trusting)) as trusted:
            assert [(await get(trusted, port, "https")).text for _ in range(2)] == ["secure 0", "secure 1"]
        assert server.connections == 1
        async with httpx2.AsyncClient(transport=GatewayTransport()) as default:  # system CAs: not trusted
            with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await get(default, port, "https")


async def test_proxies_from_the_environment_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(lambda n: ok(b"via proxy")) as (proxy, proxy_port), serving(lambda n: ok(b"direct")) as direct:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with http_client(_config("gateway")) as client:
            proxied = await client.post("http://upstream.invalid/v1/x", content=b"{}", timeout=5)
            direct_answer = await get(client, direct[1])  # 127.0.0.1 is in NO_PROXY
    assert (proxied.text, direct_answer.text) == ("via proxy", "direct")
    assert proxy.requests[0][0].startswith(b"POST http://upstream.invalid/v1/x HTTP/1.1")
    assert direct[0].requests[0][0].startswith(b"POST /v1/x?q=1 HTTP/1.1")


def test_the_same_on_uvloop(tmp_path: Path) -> None:
    """`serve` runs on uvloop, whose streams and create_connection differ from asyncio's in details."""
    import uvloop

    server_ctx, trusting = _self_signed(tmp_path)
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"

    async def scenario() -> list[str]:
        texts = []
        async with serving(lambda n: ok() if n else chunked) as (server, port):
            async with httpx2.AsyncClient(transport=GatewayTransport()) as plain:
                texts += [(await get(plain, port)).text, (await get(plain, port)).text]
            assert server.connections == 1
        async with serving(lambda n: ok(b"tls"), tls=server_ctx) as (_, port):
            async with httpx2.AsyncClient(transport=GatewayTransport(ssl_context=trusting)) as secure:
                texts.append((await get(secure, port, "https")).text)
        return texts

    assert uvloop.run(scenario()) == ["abc", "hello", "tls"]


def _config(http: str) -> ProviderConfig:
    return ProviderConfig(name="p", type="openai", base_url=None, api_key=None, http_client=http)


async def test_http_client_httpx_keeps_the_sdks_own_stack() -> None:
    async with serving(lambda n: ok()) as (server, port), http_client(_config("httpx")) as client:
        assert (await get(client, port)).text == "hello"
        assert not isinstance(client._transport, GatewayTransport)
    async with http_client(_config("gateway")) as ours:
        assert isinstance(ours._transport, GatewayTransport)


async def test_idle_connections_expire() -> None:
    async with serving(lambda n: ok()) as (server, port):
        async with httpx2.AsyncClient(transport=GatewayTransport(keepalive_expiry=0.0)) as client:
            assert [(await get(client, port)).text for _ in range(2)] == ["hello", "hello"]
    assert server.connections == 2  # the first connection was older than the expiry when the second request came


async def test_a_header_cannot_smuggle_another(client: httpx2.AsyncClient) -> None:
    async with serving(lambda n: ok()) as (server, port):
        for value in ("v\r\nx-injected: 1", "v\nx-injected: 1", "v\x00"):
            with pytest.raises(httpx2.LocalProtocolError, match="CR, LF or NUL"):
                await client.post(f"http://127.0.0.1:{port}/", content=b"", headers={"x-a": value}, timeout=5)
        assert (await get(client, port)).text == "hello"  # nothing was sent; the next request goes through
    assert len(server.requests) == 1
